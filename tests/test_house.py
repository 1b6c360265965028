"""House rules that keep the package easy to change: lint-clean, no import cycles, no
measurement logs in code comments, a README a newcomer reads in minutes."""

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "colab_utils"


def test_ruff_is_clean():
    paths = ["colab_utils", "tests", "benchmarks", "tools", "notebooks"]
    result = subprocess.run([sys.executable, "-m", "ruff", "check", *paths], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """colab_utils modules that ``path`` imports, at module level or inside functions."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            candidates = [module] + [f"{module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        found |= {c for c in candidates if c.startswith("colab_utils")}
    return found


def test_no_import_cycle_between_modules():
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: {i for i in _imports(p) if i in modules and i != m and not
                 m.startswith(i + ".")} for m, p in modules.items()}
    # Packages (__init__) import nothing of their own; drop edges to them.
    graph = {m: {i for i in deps if not modules[i].name == "__init__.py"}
             for m, deps in graph.items()}
    visiting, done = [], set()

    def visit(module):
        if module in done:
            return
        assert module not in visiting, "import cycle: " + " -> ".join(
            visiting[visiting.index(module):] + [module])
        visiting.append(module)
        for dependency in sorted(graph[module]):
            visit(dependency)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
    # The check sees function-level imports: scoring imports volumes inside evaluate().
    assert "colab_utils.evaluation.volumes" in graph["colab_utils.evaluation.scoring"]


# Data flows one way through the stages: no stage imports a later one.
STAGES = ("data", "models", "training", "evaluation")


def test_no_stage_imports_a_later_stage():
    backwards = []
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).parts
        if len(parts) < 2 or parts[0] not in STAGES:
            continue
        mine = STAGES.index(parts[0])
        for imported in _imports(path):
            stage = imported.split(".")[1] if imported.count(".") else ""
            if stage in STAGES and STAGES.index(stage) > mine:
                backwards.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert backwards == []


# The files of a slice store, by name: only their owner (data/store.py) names them.
STORE_FILES = ("preprocess.json", "index.csv", "qc.csv", '"subjects"', '"volumes"',
               "shard-", "template_mask.npz")


def _code_without_docstrings(path: Path) -> str:
    """The module's source without docstrings and comments (they may name the files)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            body[0].value.value = ""
    return ast.unparse(tree)


def test_only_the_slice_store_names_its_files():
    offending = [f"{path.relative_to(ROOT)}: {name}" for path in PACKAGE.rglob("*.py")
                 if path.name != "store.py"
                 for name in STORE_FILES if name in _code_without_docstrings(path)]
    assert offending == []


def test_no_print_in_the_package_but_the_command_lines_answers():
    """Progress and warnings go through logging (colab_utils.log); only the command line
    prints its answer, and a notebook helper prints the Markdown it cannot display."""
    allowed_files, allowed_functions = {"cli.py"}, {("colab.py", "show_markdown")}
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.name in allowed_files:
            continue
        tree = ast.parse(path.read_text())
        inside = {id(n): f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)
                  for n in ast.walk(f)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "print":
                if (path.name, inside.get(id(node))) not in allowed_functions:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == []


def test_no_comment_lines_of_measured_figures_in_the_package():
    figures = re.compile(r"#.*\b0\.\d{2,}.*\b0\.\d{2,}")
    offending = [f"{p.relative_to(ROOT)}:{i}" for p in PACKAGE.rglob("*.py")
                 for i, line in enumerate(p.read_text().splitlines(), 1) if figures.search(line)]
    assert offending == [], "measurements belong in docs/, not comments: " + ", ".join(offending)


def test_readme_is_short_and_links_the_documents():
    readme = (ROOT / "README.md").read_text()
    assert len(readme) <= 20_000
    for document in ("EXPERIMENTS", "BENCHMARKS", "RELIABILITY", "SCALING", "REGISTRATION"):
        assert f"docs/{document}.md" in readme
        assert (ROOT / "docs" / f"{document}.md").is_file()
    for document in ("ARCHITECTURE", "DECISIONS"):
        assert f"docs/{document}.md" in readme


def test_ci_runs_the_readmes_two_commands_verbatim_and_both_work_from_the_root():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(python3 -m venv .venv[^\n]*)\n```", readme)
    assert len(commands) == 2, "the README has exactly two set-up commands"
    main, tests = commands
    assert "colab_utils pipeline" in main and "pytest" in tests
    assert f"bash -c '{tests}'" in (ROOT / ".ci" / "run").read_text()
    # The tests' data (the ICBM pair) is fetched where the ICBM tests look for it.
    assert "download icbm152 --dest data/icbm152" in tests


def test_every_test_file_is_tracked_by_git():
    # A pattern in .gitignore once kept every new file under tests/data/ out of git.
    ignored = subprocess.run(["git", "check-ignore", *map(str, ROOT.glob("tests/**/*.py"))],
                             cwd=ROOT, capture_output=True, text=True)
    assert ignored.returncode == 1, f"ignored by .gitignore: {ignored.stdout}{ignored.stderr}"
