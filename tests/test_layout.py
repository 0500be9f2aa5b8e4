"""The package layout stays as docs/architecture.md draws it: layers, no import circles, thin entries,
and every `python -m jaxclr...` command named in the docs, scripts and Makefile still starts."""
import ast
import os
import pathlib
import re
import subprocess
import sys

from tests.helpers import REPO_ROOT

ROOT = pathlib.Path(REPO_ROOT)
PACKAGE = ROOT / "jaxclr"

# Bottom to top. A module may import its own unit (its folder, or itself) and any unit of a lower
# layer; never a unit of its own layer or above. docs/architecture.md draws the same list.
LAYERS = [
    ["jaxclr.paths", "jaxclr.parallel", "jaxclr.config"],
    ["jaxclr.losses", "jaxclr.models"],
    ["jaxclr.logs"],
    ["jaxclr.data"],
    ["jaxclr.evals"],
    ["jaxclr.trainer"],
    ["jaxclr.train", "jaxclr.evaluate", "jaxclr.research", "jaxclr.pretrained"],
    ["jaxclr.bench"],   # benchmarks time the trainer's own loop (jaxclr.train)
    ["jaxclr", "jaxclr.sweep", "jaxclr.aggregate", "jaxclr.study", "jaxclr.plan", "jaxclr.import_weights",
     "jaxclr.export", "jaxclr.classify"],
]
TOP_MODULES = {"__init__.py", "train.py", "evaluate.py", "parallel.py", "paths.py"}
THIN_LINES = 20


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def unit_of(module: str) -> str:
    """The unit (a layer's entry) a module belongs to: the longest listed prefix."""
    units = [u for layer in LAYERS for u in layer if module == u or module.startswith(u + ".")]
    return max(units, key=len)


LAYER_OF = {u: i for i, layer in enumerate(LAYERS) for u in layer}


def imports(module: str) -> set[str]:
    """jaxclr modules `module` imports anywhere in its file (function-level imports included)."""
    tree = ast.parse(MODULES[module].read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "jaxclr"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "jaxclr":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return found - {module}


def test_every_module_is_placed_in_a_layer():
    for module in MODULES:
        assert unit_of(module), module


def test_no_import_runs_up_or_across_a_layer():
    bad = []
    for module in MODULES:
        unit = unit_of(module)
        for target in imports(module):
            other = unit_of(target)
            if other != unit and LAYER_OF[other] >= LAYER_OF[unit]:
                bad.append(f"{module} imports {target} ({other}, layer {LAYER_OF[other]} >= {LAYER_OF[unit]})")
    assert bad == []


def test_no_import_circle():
    graph = {m: imports(m) & MODULES.keys() for m in MODULES}
    done, stack = set(), []

    def visit(m):
        if m in stack:
            raise AssertionError("import circle: " + " -> ".join(stack[stack.index(m):] + [m]))
        if m in done:
            return
        stack.append(m)
        for n in sorted(graph[m]):
            visit(n)
        stack.pop()
        done.add(m)

    for m in sorted(graph):
        visit(m)


def test_the_layering_rule_catches_an_upward_import():
    """The checks above are live: a data module importing the trainer would be reported."""
    assert LAYER_OF[unit_of("jaxclr.trainer.step")] > LAYER_OF[unit_of("jaxclr.data.pipeline")]
    assert unit_of("jaxclr.data.text.tokenizer") == "jaxclr.data"
    assert unit_of("jaxclr.sweep") == "jaxclr.sweep" and unit_of("jaxclr.research.grid") == "jaxclr.research"


def test_top_of_the_package_holds_only_foundations_train_evaluate_and_thin_entries():
    for path in PACKAGE.glob("*.py"):
        if path.name in TOP_MODULES:
            continue
        text = path.read_text()
        assert len(text.splitlines()) <= THIN_LINES and 'if __name__ == "__main__":' in text, (
            f"{path.name}: the top of jaxclr/ holds thin `python -m` entries only; move the code into a folder")


def test_every_folder_says_what_it_holds_and_may_import():
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert doc and "import" in doc.lower(), f"{init.relative_to(ROOT)}: its docstring says what lives there and " \
                                        "what it may import"


def documented_commands() -> list[str]:
    """Every module run as `python -m jaxclr...` in the README, docs/, experiments/ and the Makefile."""
    files = [ROOT / "README.md", ROOT / "Makefile", *ROOT.glob("docs/*.md"), *ROOT.glob("experiments/**/*.sh"),
             *ROOT.glob("experiments/**/*.md"), *ROOT.glob("experiments/launch/*")]
    found = set()
    for f in files:
        found |= set(re.findall(r"-m (jaxclr(?:\.\w+)*)", f.read_text()))
    return sorted(found)


def test_documents_name_the_commands_users_type():
    assert {"jaxclr.train", "jaxclr.evaluate", "jaxclr.sweep", "jaxclr.data.prepare"} <= set(documented_commands())


def test_every_documented_command_starts():
    """`python -m <module> --help` prints its usage (absl's --help exits 1, argparse's 0), no traceback, for
    every module the documents name; the commands start side by side (each is mostly an import)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    procs = {m: subprocess.Popen([sys.executable, "-m", m, "--help"], cwd=ROOT, env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for m in documented_commands()}
    failed = {}
    for module, proc in procs.items():
        out = proc.communicate(timeout=600)[0]
        if proc.returncode not in (0, 1) or "Traceback" in out or not re.search(r"usage|flags", out, re.I):
            failed[module] = out[-1500:]
    assert failed == {}
