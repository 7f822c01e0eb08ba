"""kdcore.lab: soft-label statistics, similarity matrix, gradient against ρ, bias fit, shipped assets."""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from kdcore.errors import KDError
from kdcore.lab import assets, bias, gradients, softlabels

RNG = np.random.default_rng(0)


def random_logits(n: int = 200, k: int = 10, scale: float = 6.0) -> np.ndarray:
    return RNG.normal(size=(n, k)) * scale


# ---- soft labels ---------------------------------------------------------------------------------
def test_soften_is_softmax_at_rho_1_and_rows_sum_to_one():
    z = random_logits(50)
    p = softlabels.soften(z, 1.0)
    np.testing.assert_allclose(p, torch.softmax(torch.tensor(z), 1).numpy(), rtol=1e-10)
    np.testing.assert_allclose(softlabels.soften(z, 7.0).sum(1), 1.0)
    with pytest.raises(KDError):
        softlabels.soften(z, 0.0)


def test_entropy_rises_with_rho_for_every_sample():
    z = random_logits(100)
    rhos = softlabels.RHO_STEPS
    h = np.stack([softlabels.entropy(softlabels.soften(z, r)) for r in rhos])  # (R, N)
    assert (np.diff(h, axis=0) >= -1e-12).all()
    assert h[0].mean() < 0.3 and h[-1].mean() > 0.95 * np.log(10)


def test_effective_classes_between_1_and_k():
    k = 7
    z = random_logits(100, k)
    for rho in (0.5, 1, 4, 50, 1e4):
        eff = softlabels.effective_classes(softlabels.soften(z, rho))
        assert (eff >= 1 - 1e-9).all() and (eff <= k + 1e-9).all()
    one_hot = np.zeros((1, k))
    one_hot[0, 2] = 1
    assert softlabels.effective_classes(one_hot)[0] == pytest.approx(1.0)
    assert softlabels.effective_classes(np.full((1, k), 1 / k))[0] == pytest.approx(k)


def test_entropy_curve_for_one_sample_and_for_many():
    z = random_logits(30)
    many = softlabels.entropy_curve(z, [1, 4, 16])
    one = softlabels.entropy_curve(z[3], [1, 4, 16])
    assert list(many.columns) == ["rho", "entropy", "effective_classes"]
    assert many["entropy"].is_monotonic_increasing and one["entropy"].is_monotonic_increasing
    assert one["entropy"].iloc[1] == pytest.approx(softlabels.entropy(softlabels.soften(z[3], 4)))


def test_rho_steps_are_log_spaced_and_hold_the_sweep_values():
    steps = np.array(softlabels.RHO_STEPS)
    assert steps[0] == 0.5 and steps[-1] == 50 and 1.0 in steps
    assert {1, 2, 4, 8, 16, 32} <= set(steps.tolist())
    ratios = steps[1:] / steps[:-1]
    assert ratios.min() > 1.2 and ratios.max() < 1.32  # ~10^(1/10) each: even on a log scale


def test_similar_classes_leave_out_the_top_class_and_keep_their_order_at_any_rho():
    names = [f"c{i}" for i in range(5)]
    z = np.array([0.0, 9.0, 5.0, 1.0, 3.0])
    for rho in (1, 4, 30):
        sim = softlabels.similar_classes(z, names, rho, top=3)
        assert list(sim["class"]) == ["c2", "c4", "c3"]
        assert sim["prob"].is_monotonic_decreasing
    hot, cold = softlabels.similar_classes(z, names, 30), softlabels.similar_classes(z, names, 1)
    assert hot["prob"].iloc[0] > cold["prob"].iloc[0]  # the runner-up rises with ρ


def test_similarity_matrix_rows_are_average_soft_labels():
    names = ["a", "b", "c", "d"]
    labels = np.array([0, 0, 1, 1, 2])
    z = np.array([[5, 3, 0, 0], [6, 2, 0, 0], [2, 6, 0, 0], [3, 5, 0, 0], [0, 0, 5, 1]], dtype=float)
    m = softlabels.similarity_matrix(z, labels, names, 2.0)
    assert m.shape == (4, 4) and list(m.index) == names
    np.testing.assert_allclose(m.iloc[:3].sum(axis=1), 1.0)
    np.testing.assert_allclose(m.loc["a"], softlabels.soften(z[:2], 2.0).mean(0))
    assert m.loc["d"].isna().all()  # no sample of class d
    pairs = softlabels.most_similar_pairs(m, top=2)
    assert (pairs.iloc[0]["class_a"], pairs.iloc[0]["class_b"]) == ("a", "b")
    assert pairs.iloc[0]["similarity"] == pytest.approx((m.loc["a", "b"] + m.loc["b", "a"]) / 2)
    assert pairs["similarity"].is_monotonic_decreasing


def test_similarity_matrix_refuses_mismatched_class_names():
    with pytest.raises(KDError):
        softlabels.similarity_matrix(random_logits(5, 4), np.zeros(5, int), ["a", "b"], 1.0)


def test_showcase_sample_is_right_near_one_hot_and_of_the_preferred_class():
    z = random_logits(200)
    labels = z.argmax(1).copy()
    labels[:5] = (labels[:5] + 1) % 10  # a few wrong answers
    cls = int(labels[10])
    pick = softlabels.pick_showcase_sample(z, labels, np.arange(200), preferred_class=cls)
    assert labels[pick] == cls and z[pick].argmax() == cls
    assert softlabels.soften(z[pick], 1.0).max() >= 0.97
    sure = [i for i in range(200) if labels[i] == cls and z[i].argmax() == cls
            and softlabels.soften(z[i], 1.0).max() >= 0.97]
    runner_up = lambda i: np.sort(softlabels.soften(z[i], 4.0))[-2]  # noqa: E731
    assert runner_up(pick) == max(runner_up(i) for i in sure)


# ---- why ρ² ---------------------------------------------------------------------------------------
def test_soft_gradient_without_rho2_shrinks_like_one_over_rho2_and_with_rho2_stays_flat():
    t, s = random_logits(300, scale=4.0), random_logits(300, scale=2.0)
    curve = gradients.soft_gradient_curve(t, s, None, [20.0, 40.0, 80.0]).set_index("rho")
    without, with_sq = curve["without_rho2"], curve["with_rho2"]
    assert without[20] / without[40] == pytest.approx(4.0, rel=0.08)
    assert without[40] / without[80] == pytest.approx(4.0, rel=0.05)
    assert with_sq[20] / with_sq[40] == pytest.approx(1.0, rel=0.08)
    assert with_sq[20] == pytest.approx(without[20] * 400, rel=1e-9)
    assert curve["hard"].isna().all()


def test_soft_gradient_matches_the_closed_form():
    t, s = random_logits(40), random_logits(40)
    rho = 3.0
    expected = np.linalg.norm((softlabels.soften(s, rho) - softlabels.soften(t, rho)) / rho, axis=1).mean()
    curve = gradients.soft_gradient_curve(t, s, np.zeros(40, int), [rho])
    assert curve["without_rho2"].iloc[0] == pytest.approx(expected, rel=1e-9)
    assert curve["hard"].iloc[0] > 0


# ---- bias correction --------------------------------------------------------------------------------
def under_predicted(n: int, cls: int = 1, shift: float = 4.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits that would be right if class `cls` were not pushed down by `shift`."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, n)
    z = rng.normal(size=(n, 5))
    z[np.arange(n), y] += 3.0
    z[:, cls] -= shift
    return z, y


def test_accuracy_fit_recovers_the_class_and_is_the_best_offset_on_val():
    z, y = under_predicted(2000)
    fit = bias.fit_class_bias(z, y, 1, "accuracy")
    assert fit.val_class_acc_before < 0.2 and fit.val_class_acc_after > 0.8
    assert fit.val_acc_after > fit.val_acc_before
    assert 2.0 < fit.bias < 6.0
    grid = np.linspace(-2, 10, 1201)
    best_grid = max((bias.apply_class_bias(z, 1, b).argmax(1) == y).mean() for b in grid)
    assert fit.val_acc_after >= best_grid - 1e-12


def test_prior_fit_predicts_the_class_as_often_as_it_occurs():
    z, y = under_predicted(1000, cls=2)
    fit = bias.fit_class_bias(z, y, 2, "prior")
    assert fit.val_predicted_share == pytest.approx(fit.val_prior, abs=1.5 / len(y))


def test_bias_is_fitted_on_validation_only():
    # The fit takes no test data at all, and scoring on test never changes it.
    params = inspect.signature(bias.fit_class_bias).parameters
    assert list(params)[:3] == ["val_logits", "val_labels", "cls"]
    val_z, val_y = under_predicted(800, seed=1)
    test_z, test_y = under_predicted(800, seed=2)
    fit = bias.fit_class_bias(val_z, val_y, 1)
    table_a = bias.correction_table(test_z, test_y, fit, list("abcde"))
    table_b = bias.correction_table(test_z[::-1], np.roll(test_y, 7), fit, list("abcde"))
    assert fit.bias == bias.fit_class_bias(val_z, val_y, 1).bias
    assert not table_a.equals(table_b)
    other = bias.fit_class_bias(*under_predicted(800, shift=8.0, seed=1), 1)
    assert other.bias > fit.bias + 2  # it does follow the validation data


def test_correction_table_before_after_and_all_row():
    z, y = under_predicted(500)
    fit = bias.fit_class_bias(z, y, 1)
    table = bias.correction_table(z, y, fit, list("abcde"))
    assert list(table["class"]) == list("abcde") + ["all classes"]
    row = table[table["index"] == 1].iloc[0]
    assert row["omitted"] and row["after"] > row["before"]
    assert table.iloc[-1]["after"] == pytest.approx(fit.val_acc_after)


def test_bias_fit_refuses_bad_input():
    z, y = under_predicted(20)
    with pytest.raises(KDError):
        bias.fit_class_bias(z, y, 9)
    with pytest.raises(KDError):
        bias.fit_class_bias(z[:0], y[:0], 1)
    with pytest.raises(KDError):
        bias.fit_class_bias(z, y, 1, "median")


# ---- shipped assets ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dataset", assets.LAB_DATASETS)
def test_shipped_teacher_is_small_and_loads_weights_only(dataset):
    from kdcore.train.checkpoint import load_model_from_checkpoint

    path = assets.teacher_path(dataset)
    assert path.is_file(), "run scripts/train_lab_teachers.py"
    assert path.stat().st_size < 600_000 and assets.bundle_path(dataset).stat().st_size < 900_000
    torch.load(path, map_location="cpu", weights_only=True)
    model, record = load_model_from_checkpoint(path)
    assert record["num_classes"] == 10
    bundle = assets.load_bundle(dataset)
    assert bundle.teacher_logits.shape == (len(bundle.labels), 10)
    assert bundle.teacher_test_acc > 0.85
    assert len(bundle.sample_indices) == len(bundle.sample_images) >= 100


def test_digits_bundle_logits_are_the_teachers_own():
    from kdcore.data import load_dataset
    from kdcore.train.trainer import SPLIT_SEED

    model, _ = assets.load_lab_teacher("digits")
    data = load_dataset("digits", val_fraction=0.1, seed=SPLIT_SEED)
    bundle = assets.load_bundle("digits")
    with torch.no_grad():
        z = model(data.test.x).numpy()
    np.testing.assert_array_equal(bundle.labels, data.test.y.numpy())
    np.testing.assert_allclose(bundle.teacher_logits, z, atol=0.02, rtol=0.005)  # stored as float16
    shown = (data.denormalize(data.test.x[bundle.sample_indices]) * 255).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(bundle.sample_images, shown)


def test_missing_bundle_is_one_sentence(tmp_path):
    with pytest.raises(KDError, match="scripts/train_lab_teachers.py"):
        assets.load_bundle("digits", tmp_path / "nope.pt")


def test_rho2_story_holds_on_the_shipped_logits():
    b = assets.load_bundle("fashion-mnist")
    curve = gradients.soft_gradient_curve(b.teacher_logits, b.student_logits, b.labels, [1.0, 25.0, 50.0],
                                          max_samples=1000).set_index("rho")
    assert curve.loc[25.0, "without_rho2"] / curve.loc[50.0, "without_rho2"] == pytest.approx(4.0, rel=0.15)
    assert curve.loc[25.0, "with_rho2"] / curve.loc[50.0, "with_rho2"] == pytest.approx(1.0, rel=0.15)
    # without ρ² the teacher's pull at high ρ is far below the hard labels'; with ρ² it is not
    assert curve.loc[50.0, "without_rho2"] < 0.1 * curve.loc[50.0, "hard"] < curve.loc[50.0, "with_rho2"]


def test_gradient_curve_works_while_flops_are_counted_elsewhere():
    # In the dashboard, another thread may be inside FlopCounterMode, whose module tracker hooks every
    # module globally; the ρ² curve must not trip over those hooks.
    import numpy as np
    from torch.utils.flop_counter import FlopCounterMode

    from kdcore.lab.gradients import soft_gradient_curve

    rng = np.random.default_rng(0)
    t, s = rng.normal(size=(32, 10)), rng.normal(size=(32, 10))
    with FlopCounterMode(display=False):
        curve = soft_gradient_curve(t, s, rng.integers(0, 10, 32), rhos=[1.0, 4.0])
    assert np.isfinite(curve[["with_rho2", "without_rho2", "hard"]].to_numpy()).all()
