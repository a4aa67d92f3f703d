"""The module graph stays a hierarchy, and the house rules that keep one owner per mechanism hold:
no import cycle (imports inside functions and a package's ``__init__`` included), the engines reach
nothing of the exporters, split names are defined once, no CLI helper takes more than 8 parameters,
and run-folder file names are joined to paths only in ``runs.py``."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"keras_unet": ROOT / "keras_unet", "keras_unet.cli": ROOT / "cli", "keras_unet.export": ROOT / "export",
            "keras_unet.napari_plugin": ROOT / "keras_unet" / "napari_plugin"}


def modules() -> dict:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.glob("*.py"):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = path
    return found


def imports(path: Path, known) -> set:
    """Every keras_unet module ``path`` imports, at its top or inside a function (ast.walk sees both)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("keras_unet"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                out.add(candidate if candidate in known else node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("keras_unet")}
    return {m for m in out if m in known}


def graph() -> dict:
    """module -> the modules it reaches directly. Importing ``keras_unet.export.onnx`` runs
    ``keras_unet/export/__init__.py`` first: a module of a sub-package depends on that package's
    ``__init__`` too. (The root package's ``__init__`` imports only inside ``pretrained``, which no
    import of a submodule runs, so the root is left out.)"""
    known = modules()
    edges = {name: imports(path, known) - {name} for name, path in known.items()}
    for name, deps in edges.items():
        extra = set()
        for module in deps:
            parent = module.rsplit(".", 1)[0]
            while parent != "keras_unet":
                extra.add(parent)
                parent = parent.rsplit(".", 1)[0]
        deps |= extra
    return {name: {m for m in deps if m != "keras_unet" and m != name} for name, deps in edges.items()}


def reachable(edges: dict, start: str) -> set:
    seen, todo = set(), [start]
    while todo:
        for nxt in edges[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def cycles(edges: dict) -> list:
    state, found = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    return found


def test_no_import_cycles():
    assert not cycles(graph()), cycles(graph())


def test_the_package_edge_catches_a_loop_through_an_init():
    # the loop of before: engines imported keras_unet.export.onnx, whose package __init__ imports
    # inference, which imports tiling, which imports engines
    edges = {"keras_unet.engines": {"keras_unet.export.onnx"}, "keras_unet.export.onnx": set(),
             "keras_unet.export": {"keras_unet.inference"}, "keras_unet.inference": {"keras_unet.tiling"},
             "keras_unet.tiling": {"keras_unet.engines"}}
    assert not cycles(edges)  # without the package edge the loop is invisible
    edges["keras_unet.engines"].add("keras_unet.export")  # what graph() adds for a sub-package's module
    assert cycles(edges)


def test_the_engines_reach_nothing_of_the_exporters():
    edges = graph()
    for start in ("keras_unet.engines", "keras_unet.tiling", "keras_unet.inference"):
        reached = {m for m in reachable(edges, start) if m.startswith(("keras_unet.export", "keras_unet.cli"))}
        assert not reached, (start, reached)


def test_split_names_are_defined_once():
    pattern = re.compile(r"""["']watershed["']\s*,\s*["']boundary["']|["']none["']\s*,\s*["']watershed["']""")
    places = [f"{path.relative_to(ROOT)}:{number}" for path in modules().values()
              for number, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert places == ["keras_unet/instances.py:" + places[0].split(":")[1]], places


def test_no_cli_helper_takes_more_than_8_parameters():
    tree = ast.parse((ROOT / "cli" / "main.py").read_text())
    commands = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
                and any("command" in ast.unparse(d) for d in node.decorator_list)}
    helpers = {node.name: len(node.args.args) + len(node.args.kwonlyargs) for node in ast.walk(tree)
               if isinstance(node, ast.FunctionDef) and node.name not in commands}
    assert helpers and max(helpers.values()) <= 8, {k: v for k, v in helpers.items() if v > 8}


RUN_FILES = ("model.keras", "last.keras", "config.json", "state.json", "log.csv", "curves.png", "samples.png")


def test_run_folder_names_are_joined_to_paths_only_in_runs():
    joined = re.compile(r"""/\s*["'](""" + "|".join(re.escape(name) for name in RUN_FILES) + r""")["']""")
    files = list(modules().values()) + sorted((ROOT / "benchmarks").glob("*.py"))
    places = [f"{path.relative_to(ROOT)}:{number}" for path in files if path.name != "runs.py"
              for number, line in enumerate(path.read_text().splitlines(), 1) if joined.search(line)]
    assert not places, places


def test_the_package_docstring_names_every_module():
    import keras_unet

    names = {p.stem for p in PACKAGES["keras_unet"].glob("*.py")} - {"__init__"}
    missing = sorted(n for n in names if f"``{n}``" not in keras_unet.__doc__)
    assert not missing, f"keras_unet/__init__.py's docstring does not name {missing}"


def test_the_modules_a_prediction_imports_load_no_tensorflow():
    """What a job on a converted network imports (the CLI, the model handle, jobs, engines,
    post-processing, the size estimate) loads neither Keras nor TensorFlow: importing them takes
    3-4 s, more than such a job's network (keras_unet.converted)."""
    import subprocess
    import sys

    from conftest import child_env

    code = ("import sys\nimport keras_unet.cli.main, keras_unet.predictor, keras_unet.jobs, keras_unet.engines, "
            "keras_unet.diameter, keras_unet.postprocess, keras_unet.tiling, keras_unet.inference\n"
            "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", done.stdout
