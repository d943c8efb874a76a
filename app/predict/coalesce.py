"""Requests that arrive together are predicted together (dynamic batching, as Triton and TorchServe do).

Under load, one turn of the event loop reads many requests; each parses and validates its own body,
then hands its rows here instead of running the model itself. After that turn, one vectorised call
answers all of them: NumPy's cost per call, not per row, is most of a small prediction (31.6 µs for one
row alone, 3.4 µs a row within 64), so the per-request work falls as the load rises. A request alone
waits for no one: it yields to the loop once, then answers itself. Each request keeps the model it
started with (rows are grouped by served model), and one request's bad values never fail another's
(a failed group call re-runs its requests one by one). Only models whose answer for a row does not
depend on the other rows of the call are coalesced (Predictor.batch_invariant: the MLP), so a
client's answer never depends on other clients' requests."""

from __future__ import annotations

import asyncio

# Requests up to this many rows share a call; larger ones are vectorised enough on their own.
MAX_COALESCED_ROWS = 64


class Coalescer:
    def __init__(self):
        self._pending: list[tuple[object, list[tuple], asyncio.Future]] = []  # (served, rows, answer), in arrival order

    async def answers(self, served, rows: list[tuple]) -> list[dict]:
        """`served.predictor.answers(rows)`, computed together with the other requests of this turn."""
        answer = asyncio.get_running_loop().create_future()
        self._pending.append((served, rows, answer))
        if len(self._pending) > 1:  # the first request of this turn answers for all: wait for it
            return await answer
        # The first: yield once, so that the requests the loop read in this turn join, then answer all
        # (even if this request is cancelled meanwhile: the others wait for this flush).
        try:
            await asyncio.sleep(0)
        except BaseException:  # cancelled: nobody reads this answer, but the others still get theirs
            answer.cancel()
            self._flush()
            raise
        self._flush()
        return answer.result()

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        groups: dict[int, list] = {}
        for item in pending:
            groups.setdefault(id(item[0]), []).append(item)
        for group in groups.values():
            _answer_group(group)


def _answer_group(group: list) -> None:
    predictor = group[0][0].predictor
    if len(group) > 1:
        rows = [row for _, request_rows, _ in group for row in request_rows]
        try:
            answers = predictor.answers(rows)
        except Exception:  # noqa: BLE001 - whoever's rows caused it: answer each request on its own, below
            pass
        else:
            start = 0
            for _, request_rows, future in group:
                _settle(future, result=answers[start : start + len(request_rows)])
                start += len(request_rows)
            return
    for _, request_rows, future in group:
        try:
            _settle(future, result=predictor.answers(request_rows))
        except Exception as exc:  # noqa: BLE001 - handed to the request it belongs to
            _settle(future, exception=exc)


def _settle(future: asyncio.Future, result=None, exception=None) -> None:
    if future.done():  # the request was cancelled meanwhile (server shutdown)
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)
