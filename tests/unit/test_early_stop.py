from transferkit.training.early_stop import EarlyStopping


def test_stops_after_patience_and_tracks_best():
    es = EarlyStopping(metric="accuracy", mode="max", patience=2, min_delta=0.01)
    assert es.update(0.70, 10) is True
    assert es.update(0.705, 20) is False  # below min_delta
    assert not es.should_stop
    assert es.update(0.69, 30) is False
    assert es.should_stop
    assert (es.best, es.best_step) == (0.70, 10)


def test_min_mode_and_state_roundtrip():
    es = EarlyStopping(metric="loss", mode="min", patience=1)
    es.update(1.0, 1)
    es.update(0.5, 2)
    clone = EarlyStopping(metric="x")
    clone.load_state_dict(es.state_dict())
    assert (clone.best, clone.best_step, clone.metric, clone.mode) == (0.5, 2, "loss", "min")
    assert clone.update(0.6, 3) is False and clone.should_stop


def test_disabled_never_stops():
    es = EarlyStopping(metric="accuracy", patience=1, enabled=False)
    es.update(0.9, 1)
    es.update(0.1, 2)
    assert not es.should_stop
