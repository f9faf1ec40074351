"""Which node may speak for which site: the allow-list and duplicate claims.

At discovery every SuperNode names its site (``site-id`` / ``partition-id`` in its
node-config), which anyone holding a registered key can set to anything. With
``site-nodes`` the coordinator binds each site to the node id Flower gave its
registered public key (``flwr supernode list`` shows both), so a node that is not
on the list, or claims another site than its own, is refused. Without the list,
two nodes claiming one site are both refused: the server cannot tell which is
the site, and sending either the site's adapters could hand them to an impostor.

Pure logic: no torch, no Flower training imports.
"""

from __future__ import annotations

from collections.abc import Mapping


def parse_site_nodes(text: str) -> dict[int, int]:
    """``"0=1234,1=5678"`` -> {site: node id}; ``""`` -> {} (no allow-list).

    Raises
    ------
    ValueError
        Naming the item that is not ``site=node`` with integers >= 0, or a site or
        node given twice.
    """
    out: dict[int, int] = {}
    nodes: set[int] = set()
    for item in text.replace(" ", "").split(","):
        if not item:
            continue
        site, sep, node = item.partition("=")
        if not (sep and site.isdigit() and node.isdigit()):
            raise ValueError(
                f"site-nodes item {item!r} is not site=node-id (two integers >= 0)"
            )
        if int(site) in out or int(node) in nodes:
            raise ValueError(f"site-nodes item {item!r}: site or node given twice")
        out[int(site)] = int(node)
        nodes.add(int(node))
    return out


def admit_sites(
    claims: Mapping[int, int], allowed: Mapping[int, int]
) -> tuple[dict[int, int], list[str]]:
    """The admitted nodes (node id -> site) and one reason per refused node.

    Parameters
    ----------
    claims : Mapping[int, int]
        Node id -> the site it claims at discovery.
    allowed : Mapping[int, int]
        Site -> the only node id it is accepted from (empty: no allow-list).
    """
    refused: list[str] = []
    admitted: dict[int, int] = {}
    if allowed:
        for node, site in sorted(claims.items()):
            own = [s for s, n in allowed.items() if n == node]
            if not own:
                refused.append(f"node {node} (claims site {site}) is not in site-nodes")
            elif own[0] != site:
                refused.append(
                    f"node {node} claims site {site} but site-nodes binds it to "
                    f"site {own[0]}"
                )
            else:
                admitted[node] = site
        return admitted, refused
    by_site: dict[int, list[int]] = {}
    for node, site in claims.items():
        by_site.setdefault(site, []).append(node)
    for site, nodes in sorted(by_site.items()):
        if len(nodes) == 1:
            admitted[nodes[0]] = site
            continue
        refused += [
            f"node {node} claims site {site}, as do nodes "
            f"{sorted(n for n in nodes if n != node)}: none of them is sent data "
            "(bind sites to nodes with site-nodes)"
            for node in sorted(nodes)
        ]
    return admitted, refused


def same_base(
    claims: Mapping[int, int], bases: Mapping[int, str], expected: str
) -> tuple[dict[int, int], list[str]]:
    """The claims of nodes whose base is the server's (``expected``), and refusals.

    ``bases``: node id -> the fingerprint it reported (``""``: not built there).
    """
    kept: dict[int, int] = {}
    refused: list[str] = []
    for node, site in sorted(claims.items()):
        base = bases.get(node, "")
        if base == expected:
            kept[node] = site
        elif not base:
            refused.append(
                f"node {node} (site {site}) has no base built: run "
                "`fcit-flower base` there first"
            )
        else:
            refused.append(
                f"node {node} (site {site}) has another base ({base[:16]}... vs "
                f"the server's {expected[:16]}...): every site must train the same"
            )
    return kept, refused
