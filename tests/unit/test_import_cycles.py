"""No import cycle anywhere in ``lib/rollbook`` (the house rule), checked on grimp's import graph.

Imports inside functions and under ``TYPE_CHECKING`` count too: a lazy import is still a cycle.
"""

from __future__ import annotations

import grimp

# No known exceptions: the four cycles that were on main when this check arrived are gone (a ratchet:
# anything added here must come with the reason it cannot be broken).
KNOWN: set[tuple[str, ...]] = set()


def _cycles(graph: grimp.ImportGraph) -> list[tuple[str, ...]]:
    """One shortest cycle through each direct import ``a -> b`` that has a way back ``b -> ... -> a``."""
    found: set[tuple[str, ...]] = set()
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back:
                cycle = (importer, *back)
                start = cycle.index(min(cycle[:-1]))  # one spelling per cycle
                found.add(cycle[start:-1] + cycle[:start + 1])
    return sorted(found)


def test_the_checker_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for name in ("pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(name)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.c")
    assert _cycles(graph) == []
    graph.add_import(importer="pkg.c", imported="pkg.a")
    assert _cycles(graph) == [("pkg.a", "pkg.b", "pkg.c", "pkg.a")]


def test_no_module_of_rollbook_takes_part_in_an_import_cycle() -> None:
    graph = grimp.build_graph("rollbook", cache_dir=None)
    assert len(graph.modules) > 50, "the graph should hold the whole package"
    cycles = set(_cycles(graph))
    new, gone = sorted(cycles - KNOWN), sorted(KNOWN - cycles)
    assert not new, "import cycles:\n" + "\n".join(" -> ".join(c) for c in new)
    assert not gone, "fixed, drop from KNOWN:\n" + "\n".join(" -> ".join(c) for c in gone)


def test_the_sandbox_has_no_import_cycle_at_all() -> None:
    graph = grimp.build_graph("rollbook", cache_dir=None)
    assert not [c for c in _cycles(graph) if any(m.startswith("rollbook.sandbox") for m in c)]
