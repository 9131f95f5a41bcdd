"""Admission control's arithmetic: the cost model, the judgement of new work, and which queued work is overdue."""

from __future__ import annotations

import asyncio

import pytest

from service.runtime.admission import HEADROOM, CostModel, Refused, judge, overdue
from service.runtime.engine import warm_up_job
from service.runtime.jobs import Ticket

PIXELS = 100_000


def measured(seconds_per_image: float) -> CostModel:
    model = CostModel()
    model.observe(PIXELS, seconds_per_image)
    return model


def test_a_slower_run_raises_the_estimate_at_once_and_a_faster_one_lowers_it_bit_by_bit() -> None:
    model = measured(1.0)
    model.observe(PIXELS, 3.0)  # slower: counts in full, as a 504 costs more than a 503
    assert model.estimate(PIXELS) == pytest.approx(3.0)
    model.observe(PIXELS, 1.0)  # faster: only a step towards it
    assert 1.0 < model.estimate(PIXELS) < 3.0


def test_new_work_is_judged_with_the_batch_it_joins() -> None:
    model = measured(1.0)  # one image: 1 s; the lane runs up to 8 at once, done together
    budget = 6 / HEADROOM
    judge(model, 1.0, PIXELS, budget, 1)  # alone: 1 s ahead + 1 s fits in 6 s
    judge(model, 1.0, PIXELS, budget * 1.5, 8)  # 1 s ahead + a batch of 8 s fits in 9 s
    with pytest.raises(Refused) as refused:  # 1 s ahead + a batch of 8 s does not fit in 6 s
        judge(model, 1.0, PIXELS, budget, 8)
    assert refused.value.reason == "overloaded" and refused.value.retry_s == 1.0
    assert "whose batch takes about 8.0 s" in refused.value.message


def test_queued_work_that_could_no_longer_finish_in_time_is_found_in_queue_order() -> None:
    loop = asyncio.new_event_loop()
    try:
        def ticket(deadline: float) -> Ticket:
            return Ticket(warm_up_job(), loop.create_future(), 0.0, deadline)

        def one_second(pixels: int) -> float:
            return 1.0

        # from t=10, in batches of 2 at 1 s an image: the first two are done at 12, the next two at 14, the last at 16
        on_time = [ticket(100), ticket(12.6), ticket(100), ticket(15.1), ticket(100)]
        assert overdue(on_time, one_second, 10.0, 2) == []
        # 12.4 leaves 2.4 s, and 80% of that (HEADROOM) is less than the 2 s to the end of the first batch; the
        # ticket is left out, so the others move up: the last one is done at 14, within 80% of its 6 s
        tight = [ticket(100), ticket(12.4), ticket(100), ticket(100), ticket(16.0)]
        assert overdue(tight, one_second, 10.0, 2) == [tight[1]]
        # a batch not full yet counts as full (later work may join it), and work past its deadline is overdue
        alone = [ticket(12.0)]
        assert overdue(alone, one_second, 10.0, 1) == [] and overdue(alone, one_second, 10.0, 2) == alone
        assert overdue(alone, one_second, 12.5, 1) == alone
    finally:
        loop.close()
