"""Property: whatever a user types into the CLI's parsers (shapes, opsets, model specs), drconv
answers with exit 0, 1 or 2 and never a Python traceback."""

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from drconv.cli import app
from drconv.model_names import DEFAULT_MODEL

SIZES = st.integers(min_value=-3, max_value=48)
SHAPES = st.one_of(
    st.lists(SIZES, min_size=0, max_size=6).map(lambda v: ",".join(map(str, v))),
    st.lists(SIZES, min_size=4, max_size=4).map(lambda v: "x".join(map(str, v))),
    st.text(alphabet=string.digits + ",x-. a", max_size=20),
)
OPSETS = st.one_of(st.integers(min_value=-2, max_value=40).map(str), st.text(alphabet=string.printable, max_size=6))
# Never a module that exists (a fuzzed spec must not call a real function), plus known forms.
SPECS = st.one_of(
    st.sampled_from([DEFAULT_MODEL, "drconv-shufflenetv2-0.5x", "nope", ":", "a:", ":b", "drconv.models:", "x.y:z:w"]),
    st.text(alphabet=string.ascii_letters + string.digits + ":._-[]", max_size=12).map(lambda t: "zz_no_such_" + t),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(["summary", "export"]), shape=SHAPES, opset=OPSETS, spec=SPECS)
def test_cli_parsing_never_raises(tmp_path, command, shape, opset, spec):
    args = [command, "--model", spec, "--input-shape", shape]
    if command == "export":
        args += ["-o", str(tmp_path / "m.onnx"), "--opset", opset]
    result = CliRunner().invoke(app, args)
    assert result.exit_code in (0, 1, 2), (args, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, repr(result.exception))
    assert "Traceback" not in result.output
