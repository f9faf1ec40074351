from fcit_flower.tasks.schedule import build_schedule, describe

UNITS = [["t0"], ["t1"], ["t2"], ["t3"]]


def test_hom_all_clients_same_task():
    schedule = build_schedule(UNITS, scenario="hom", num_clients=5, seed=0)
    assert schedule.num_stages == 4
    for s, stage in enumerate(schedule.assignments):
        assert set(stage) == {(f"t{s}",)}
    assert schedule.tasks == ("t0", "t1", "t2", "t3")
    assert schedule.seen_columns() == [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3]]
    assert schedule.learned_at() == [0, 1, 2, 3]


def test_het_clients_differ_within_stage_and_see_every_task_once():
    schedule = build_schedule(UNITS, scenario="het", num_clients=8, seed=0)
    for stage in schedule.assignments:
        assert len(set(stage)) > 1
    for client in range(8):
        learned = [schedule.client_tasks(s, client) for s in range(4)]
        assert sorted(learned) == [("t0",), ("t1",), ("t2",), ("t3",)]
    assert "stage 1" in describe(schedule)


def test_het_is_seeded():
    a = build_schedule(UNITS, scenario="het", num_clients=8, seed=1)
    b = build_schedule(UNITS, scenario="het", num_clients=8, seed=1)
    assert a == b
