"""python -m dashboard's settings: loopback by default, LIVEPROP_HOST or --host to bind elsewhere."""

import ast
from pathlib import Path

from dashboard import __main__ as main
from dashboard import serve


def test_binds_loopback_unless_told(monkeypatch):
    monkeypatch.delenv("LIVEPROP_HOST", raising=False)
    args = main.parse([])
    assert (args.host, args.port, args.visdom_port) == ("127.0.0.1", 8501, 8097)
    monkeypatch.setenv("LIVEPROP_HOST", "0.0.0.0")
    assert main.parse([]).host == "0.0.0.0"
    assert main.parse(["--host", "10.1.2.3"]).host == "10.1.2.3"


def test_streamlit_command_names_the_address_and_runs_headless():
    cmd = serve.command("127.0.0.1", 8600)
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.port") + 1] == "8600"
    assert cmd[cmd.index("--server.headless") + 1] == "true"
    assert cmd[cmd.index("--browser.gatherUsageStats") + 1] == "false"
    assert cmd[4].endswith("dashboard/app.py")
    assert cmd[cmd.index("--server.enableStaticServing") + 1] == "true"  # dashboard/static/: the CJK font


def test_the_browser_flags_are_written_once():
    """The tests and the benchmark open pages in Chromium with serve.CHROMIUM_ARGS, and assign it nowhere else."""
    root = Path(serve.__file__).resolve().parent.parent
    assigned = []
    for path in sorted([*root.glob("tests/*.py"), *root.glob("bench/*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AnnAssign)
                else []
            )
            assigned += [
                f"{path.name}:{node.lineno}" for t in targets if isinstance(t, ast.Name) and t.id.startswith("CHROMIUM")
            ]
    assert assigned == []
    assert "--disable-background-networking" in serve.CHROMIUM_ARGS  # no request of Chromium's own in a test's log
