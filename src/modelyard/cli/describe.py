"""modelyard describe: write (or check) the descriptor of a directory of plain model files,
so that a version registered from it loads with load_model like one from log_model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelyard.cli import output
from modelyard.cli.common import JsonOption, handles_errors


def install(app: typer.Typer) -> None:
    app.command("describe")(handles_errors(describe))


def describe(
    directory: Annotated[Path, typer.Argument(help="The directory of model files.")],
    flavor: Annotated[
        str | None,
        typer.Option(
            help="sklearn (skops), xgboost (UBJSON), lightgbm (text), onnx, or pickle."
            " Without it, the directory's modelyard.yaml is checked instead of written."
        ),
    ] = None,
    file: Annotated[
        list[str] | None,
        typer.Option("--file", "-f", help="The model file, relative to DIRECTORY."),
    ] = None,
    input_example: Annotated[
        Path | None,
        typer.Option(
            help="A JSON input example: a list of records, a dict of columns or a list of"
            " rows. The signature is inferred from it and the model run on it."
        ),
    ] = None,
    unsafe_pickle: Annotated[
        bool,
        typer.Option("--unsafe-pickle", help="Allow --flavor pickle (runs code when loaded)."),
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Write DIRECTORY/modelyard.yaml for plain model files, after loading them with the
    flavor and running the model on the example; or, without --flavor, load the existing
    descriptor's model and run it on its example, to check it.

    Then `modelyard register NAME DIRECTORY` and `load_model("NAME")` loads it.

    [bold]Example[/bold]: modelyard describe ./model --flavor sklearn --file model.skops
    --input-example example.json
    """
    from modelyard.flavors import describe_directory, load_directory
    from modelyard.flavors.signature import example_from_json

    if flavor is None:
        if file or input_example:
            raise typer.BadParameter("--file and --input-example need --flavor")
        predictor = load_directory(directory, unsafe_pickle=unsafe_pickle)
        if predictor.input_example is not None:
            predictor.predict(predictor.input_example)
        descriptor, verb = predictor.descriptor, "checked"
    else:
        if not file:
            raise typer.BadParameter("name the model file with --file")
        example = (
            example_from_json(input_example.read_text(encoding="utf-8"))
            if input_example is not None
            else None
        )
        descriptor = describe_directory(
            directory, flavor, file, input_example=example, unsafe_pickle=unsafe_pickle
        )
        verb = "wrote"
    if json_out:
        output.print_json(descriptor.to_dict())
        return
    inputs = descriptor.signature.inputs if descriptor.signature else ()
    output.console.print(
        f"{verb} {output.escape(str(directory / 'modelyard.yaml'))}: {descriptor.flavor}"
        f" ({descriptor.format}), {len(inputs)} inputs"
        + ("" if descriptor.signature else " (no signature: give --input-example)")
    )
