"""The client side: the SDK's Registry and the transports it talks through."""
