"""The scenarios as README and the tutorial present them: every boundary condition and exercise
of the texts has one, `list` and `run --all` go in the texts' order, and the docs follow it."""

import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT
from bench.scenarios import ORDER, REGISTRY
from bench.scenarios.harness import find

README = (Path(ROOT) / "README.md").read_text()
TUTORIAL = (Path(ROOT) / "docs" / "tutorial.md").read_text()


def readme_table_ids():
    """The id column of README's scenario table, row by row."""
    table = README[README.index("| id | what happens if... | text |"):]
    rows = []
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append(line.split("|")[1].strip())
    return rows


def test_every_failure_scenario_and_exercise_of_the_texts_has_a_scenario():
    """X1-X25 (the texts' failure scenarios and boundary conditions) and E1-E14 (the worksheet's
    exercises) are each carried by a scenario, so `run ID` works for every one of them."""
    carried = {i for sc in REGISTRY.values() for i in sc.ident.split()}
    wanted = {f"X{n}" for n in range(1, 26)} | {f"E{n}" for n in range(1, 15)}
    assert wanted - carried == set()


def test_list_and_run_all_go_in_the_texts_order():
    """`list` and `run --all` follow one list, the order in which README and the tutorial walk the
    texts; a scenario left out of it would run last, out of place."""
    assert list(REGISTRY) == ORDER
    proc = subprocess.run([sys.executable, "-m", "bench.scenarios", "list"], cwd=ROOT,
                          capture_output=True, timeout=60)
    listed = [line.split("  ")[0] for line in proc.stdout.decode().splitlines()]
    assert listed == [sc.ident for sc in REGISTRY.values()]


def test_readmes_table_lists_every_scenario_in_the_order_they_run():
    """README's table has one row per scenario, with all its ids, in `list`'s order, and says how
    many there are."""
    assert readme_table_ids() == [sc.ident for sc in REGISTRY.values()]
    assert f"runs all {len(REGISTRY)}," in README


def test_the_tutorial_runs_every_scenario_once_in_the_same_order():
    """docs/tutorial.md walks the texts in order and gives each scenario's command once, at its
    place in the walk: the same order as README's table and `list`."""
    runs = re.findall(r"^\$ python -m bench\.scenarios run ([A-Za-z0-9-]+)$", TUTORIAL, re.M)
    found = [find(key) for key in runs]
    assert None not in found, runs
    assert [sc.ident for sc in found] == [sc.ident for sc in REGISTRY.values()]


def test_scenarios_cite_the_books_never_files_users_do_not_have():
    """What a scenario prints about its source cites the text's chapter and section; nothing
    names the project's private notes or a folder outside the repository."""
    for sc in REGISTRY.values():
        for text in (sc.source, sc.title, sc.prediction):
            assert not re.search(r"INVENTORY|seeds|shared/|\.\./", text), (sc.ident, text)
