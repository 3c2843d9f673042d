"""The free ports the launcher and the tests pick: never the same twice in one process, since a
pick is bound only later, when its server starts."""

from deploy import processes


def test_ports_handed_out_never_overlap_before_they_are_bound():
    picked: list[int] = []
    for _ in range(150):
        base = processes.free_port_block(10)
        picked.extend(range(base, base + 10))
        picked.append(processes.free_port())
    # 1,650 ports out of ~12,000: picked independently, some would overlap (a birthday bound).
    assert len(set(picked)) == len(picked)
