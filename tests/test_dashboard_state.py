"""Every session-state key and address parameter of the dashboard is named in dashboard/state.py: outside
it, code reaches st.session_state and st.query_params only through state's names, never through a key
written in place. Read with ast (nothing is imported), so a new page is covered the day it is added."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STORES = {"session_state", "query_params"}
METHODS = {"get", "pop", "setdefault", "clear", "keys", "items", "values", "update", "to_dict", "from_dict"}


def _is_store(node) -> bool:
    return isinstance(node, ast.Attribute) and node.attr in STORES


def _written_in_place(node) -> bool:
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str))


def keys_written_in_place(source: str) -> list[str]:
    """Each place where code reaches st.session_state or st.query_params with a key written in place:
    an attribute (st.session_state.lp_run), a subscript, get/pop/setdefault, `in`, and the query_params
    of st.switch_page."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and _is_store(node.value) and node.attr not in METHODS:
            found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Subscript) and _is_store(node.value) and _written_in_place(node.slice):
            found.append(f"line {node.lineno}: [{ast.unparse(node.slice)}]")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and _is_store(node.func.value):
            if node.args and _written_in_place(node.args[0]):
                found.append(f"line {node.lineno}: .{node.func.attr}({ast.unparse(node.args[0])})")
        elif isinstance(node, ast.Compare) and any(_is_store(c) for c in node.comparators):
            if _written_in_place(node.left):
                found.append(f"line {node.lineno}: {ast.unparse(node.left)} in")
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg == "query_params" and isinstance(kw.value, ast.Dict):
                    found += [f"line {node.lineno}: query_params {{{ast.unparse(k)}}}" for k in kw.value.keys
                              if _written_in_place(k)]  # fmt: skip
    return found


SOURCES = [p for p in sorted((ROOT / "dashboard").rglob("*.py")) if p.name != "state.py"]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_session_keys_are_named_in_state_only(path):
    found = keys_written_in_place(path.read_text())
    assert not found, f"{path.relative_to(ROOT)} names session keys in place (name them in state.py): {found}"


def test_the_check_sees_each_way_of_writing_a_key_in_place():
    probe = """
st.session_state.lp_run = 1
x = st.session_state["lp_error"]
st.session_state.get("lp_control")
st.session_state.setdefault(f"at_{kind}", 0)
if "k" in st.session_state: pass
st.query_params["run"] = "x"
st.switch_page("views/train.py", query_params={"run": rid})
st.session_state[state.RUN] = st.session_state.get(state.live_lr(rid))
st.session_state.pop(state.ERROR, None)
"""
    found = keys_written_in_place(probe)
    assert [f.split(":")[0] for f in found] == [f"line {n}" for n in range(2, 9)], found
