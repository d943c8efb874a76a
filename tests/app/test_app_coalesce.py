"""Requests of one event-loop turn share one prediction call, and keep their own answers and errors."""

from __future__ import annotations

import asyncio

import pytest
from conftest import example_frame

from app.predict.coalesce import Coalescer
from app.store.loading import load_from_registry
from app.predict.predictor import OutOfRange


class Served:
    """What the coalescer needs of a served model: its predictor (counting the calls it gets)."""

    def __init__(self, predictor):
        self.inner, self.calls = predictor, []

    @property
    def predictor(self):
        return self

    def __getattr__(self, name):  # everything else (class names, the schema...) is the real predictor's
        return getattr(self.inner, name)

    def answers(self, rows):
        self.calls.append(len(rows))
        return self.inner.answers(rows)


@pytest.fixture(scope="module")
def loaded(trained_model):
    model = load_from_registry(trained_model.project.tracking_uri, trained_model.model_name, trained_model.version)
    rows = model.schema.rows(example_frame()[model.schema.names].head(40).to_dict("records"))
    return model, rows


def _gather(coalescer, requests):
    async def run():
        return await asyncio.gather(*(coalescer.answers(served, rows) for served, rows in requests), return_exceptions=True)

    return asyncio.run(run())


def test_requests_of_one_turn_share_one_call_and_get_their_own_rows_back(loaded):
    model, rows = loaded
    served = Served(model.predictor)
    requests = [(served, rows[i : i + 1]) for i in range(10)] + [(served, rows[10:15]), (served, rows[15:16])]
    answers = _gather(Coalescer(), requests)
    assert served.calls == [16], "one vectorised call for all twelve requests"
    assert answers == [model.predictor.answers(r) for _, r in requests]


def test_a_request_alone_is_answered_by_itself(loaded):
    model, rows = loaded
    served = Served(model.predictor)
    assert _gather(Coalescer(), [(served, rows[:1])]) == [model.predictor.answers(rows[:1])]
    assert served.calls == [1]


def test_each_request_keeps_the_model_it_started_with(loaded):
    model, rows = loaded
    old, new = Served(model.predictor), Served(model.predictor)
    _gather(Coalescer(), [(old, rows[:1]), (new, rows[1:2]), (old, rows[2:3])])
    assert (old.calls, new.calls) == ([2], [1])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's overflow warning: the overflow is the point
def test_one_requests_overflow_fails_only_that_request(loaded):
    model, rows = loaded
    served = Served(model.predictor)
    area = model.schema.names.index("mean_area")
    bad = [rows[1][:area] + (1e300,) + rows[1][area + 1 :]]
    first, second, third = _gather(Coalescer(), [(served, rows[:1]), (served, bad), (served, rows[2:3])])
    assert isinstance(second, OutOfRange) and second.problems == [(0, None)]
    assert first == model.predictor.answers(rows[:1]) and third == model.predictor.answers(rows[2:3])


def test_the_others_are_answered_even_if_the_first_request_is_cancelled(loaded):
    model, rows = loaded
    served = Served(model.predictor)

    async def run():
        coalescer = Coalescer()
        first = asyncio.create_task(coalescer.answers(served, rows[:1]))
        second = asyncio.create_task(coalescer.answers(served, rows[1:2]))
        await asyncio.sleep(0)  # both have joined; the first is yielding before it answers for both
        first.cancel()
        answer = await asyncio.wait_for(second, timeout=5)
        with pytest.raises(asyncio.CancelledError):
            await first
        return answer

    assert asyncio.run(run()) == model.predictor.answers(rows[1:2])


def test_a_failed_shared_call_answers_each_request_on_its_own(loaded):
    model, rows = loaded

    class Fragile(Served):
        def answers(self, rows):
            if len(rows) > 1:
                raise MemoryError("the shared call failed")  # any failure, not only OutOfRange
            return super().answers(rows)

    served = Fragile(model.predictor)
    answers = _gather(Coalescer(), [(served, rows[:1]), (served, rows[1:2])])
    assert answers == [model.predictor.answers(rows[:1]), model.predictor.answers(rows[1:2])]


class Counted:
    """A served model's predictor, counting the calls it gets; `batch_invariant` as given."""

    def __init__(self, predictor, batch_invariant: bool):
        self.inner, self.batch_invariant, self.calls = predictor, batch_invariant, []

    def __getattr__(self, name):  # everything else (class names, the schema...) is the real predictor's
        return getattr(self.inner, name)

    def answers(self, rows):
        self.calls.append(len(rows))
        return self.inner.answers(rows)


@pytest.mark.parametrize("invariant, expected_calls", [(True, [8]), (False, [1] * 8)])
def test_concurrent_posts_share_a_call_only_for_a_batch_invariant_model(trained_model, tmp_path, invariant, expected_calls):
    import dataclasses

    import httpx

    from app.main import create_app
    from app_support import auth, settings

    app = create_app(settings(trained_model.project.tracking_uri, trained_model.model_name, tmp_path / "cache"))
    store = app.state.store

    async def run():
        async with app.router.lifespan_context(app):
            counted = Counted(store.current.predictor, invariant)
            store.current = dataclasses.replace(store.current, predictor=counted)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                posts = [client.post("/predict", json=trained_model.request, headers=auth()) for _ in range(8)]
                answers = await asyncio.gather(*posts)
            return counted.calls, answers

    calls, answers = asyncio.run(run())
    assert calls == expected_calls
    assert all(a.status_code == 200 for a in answers) and len({a.content for a in answers}) == 1


def test_a_scikit_learn_model_is_never_coalesced(trained_model, tmp_path):
    """A real scikit-learn estimator (BLAS products whose last bits depend on the batch) answers each
    request with a call of its own, however many arrive in one turn."""
    import httpx

    from app.main import create_app
    from app_support import auth, copy_store, settings, train_version
    from conftest import example_csv, tiny_config

    store = copy_store(trained_model.project.path / "database.db", tmp_path / "store")
    config = tiny_config(framework="sklearn", model="logistic_regression", data_path=str(example_csv()))
    version = train_version(store, config, tmp_path / "work")
    store.set_alias(trained_model.model_name, "sklearn", version)
    app = create_app(settings(store.uri, trained_model.model_name, tmp_path / "cache", model_alias="sklearn"))

    async def run():
        async with app.router.lifespan_context(app):
            predictor = app.state.store.current.predictor
            estimator = predictor._estimator
            calls, real = [], estimator.predict_proba
            estimator.predict_proba = lambda X: calls.append(len(X)) or real(X)  # count the real model's calls
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
                answers = await asyncio.gather(*(client.post("/predict", json=trained_model.request, headers=auth()) for _ in range(8)))
            return predictor, calls, answers

    predictor, calls, answers = asyncio.run(run())
    assert type(predictor._estimator).__module__.startswith("sklearn.") and not predictor.batch_invariant
    assert calls == [1] * 8
    assert all(a.status_code == 200 for a in answers)
