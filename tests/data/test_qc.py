"""QC judges each feature where it means something: a skull-stripped brain's rim is not
scalp, a mask fallback's Dice of 1.0 is a sentinel, a small spread is not a signal, and one
borderline feature is a warning, not a wrong registration."""

from colab_utils.data.qc import flag_outliers


def _record(corr=0.8, scale=0.85, rim=0.75, dice=0.95, stripped=False, fallback=False,
            reason=""):
    return {"corr_t1_template": corr, "volume_scale": scale, "rim_ratio": rim,
            "mask_dice": dice, "skull_stripped": stripped, "mask_fallback": fallback,
            "mask_reason": reason, "slice_mm": 1.0}


def test_skull_stripped_scans_are_not_judged_by_their_rim():
    # The five clinical pairs: rims 0.00-0.02 and two at 0.41 / 0.50, all stripped.
    records = {f"s{i}": _record(rim=rim, stripped=True)
               for i, rim in enumerate([0.0, 0.01, 0.02, 0.41, 0.50])}
    flag_outliers(records)
    assert [r["outlier"] for r in records.values()] == [False] * 5
    # The same rims on heads with scalp: the last two are far from the others.
    heads = {f"s{i}": _record(rim=rim) for i, rim in enumerate([0.0, 0.01, 0.02, 0.41, 0.50])}
    flag_outliers(heads)
    assert heads["s4"]["outlier"] and "rim_ratio 0.5 far from" in heads["s4"]["qc_reasons"]


def test_a_head_into_brain_registration_is_flagged_with_its_reasons():
    records = {f"s{i}": _record(rim=0.73 + 0.01 * (i % 3), scale=0.8 + 0.02 * i)
               for i in range(6)}
    records["bad"] = _record(rim=0.95, scale=1.2)
    flag_outliers(records)
    assert [s for s, r in records.items() if r["outlier"]] == ["bad"]
    assert "rim_ratio 0.95 outside [0.0, 0.9]" in records["bad"]["qc_reasons"]
    assert "volume_scale 1.2 outside [0.5, 1.15]" in records["bad"]["qc_reasons"]


def test_a_mask_fallback_is_a_warning_with_its_reason_and_its_dice_is_not_judged():
    records = {f"s{i}": _record(dice=0.95 + 0.002 * i) for i in range(5)}
    records["postop"] = _record(dice=1.0, fallback=True, reason="its volume was 0.6 L")
    flag_outliers(records)
    assert not records["postop"]["outlier"]
    assert "own brain mask not used (its volume was 0.6 L)" in records["postop"]["warnings"]


def test_a_spread_near_zero_does_not_make_small_differences_outliers():
    # Correlations 0.800-0.802 and one at 0.75: a MAD near zero would call it z of -30;
    # the spread floor (0.03) puts it at -1.7.
    records = {f"s{i}": _record(corr=c) for i, c in enumerate([0.8, 0.801, 0.802, 0.799, 0.75])}
    flag_outliers(records)
    assert not any(r["outlier"] or r["warnings"] for r in records.values())


def test_one_borderline_feature_warns_two_flag():
    base = {f"s{i}": _record() for i in range(6)}
    one = {**base, "x": _record(corr=0.8 - 0.03 * 5)}  # robust z -5: borderline
    flag_outliers(one)
    assert not one["x"]["outlier"] and "corr_t1_template" in one["x"]["warnings"]
    two = {**{k: _record() for k in base}, "x": _record(corr=0.8 - 0.03 * 5,
                                                        scale=0.85 + 0.03 * 5)}
    flag_outliers(two)
    assert two["x"]["outlier"] and "volume_scale" in two["x"]["qc_reasons"]


def _contrast_pairs(store):
    """The shared phantom store's training slices inside the brain, and wrong pairs of
    them: the T1 given twice (re-saved), and a second T1-weighted scan as the T2."""
    import numpy as np

    from colab_utils.data.store import SliceStore

    slices = SliceStore(store).split("train")
    t1, t2, mask = slices.t1[..., 0], slices.t2[..., 0], slices.mask[..., 0]
    rng = np.random.default_rng(0)
    copy = np.where(mask, t1 + rng.normal(0, 0.01, t1.shape), 0)  # re-saved: not bit-equal
    # Another T1-weighted scan: the same order of tissues, another intensity curve and
    # noise (correlated with the T1, far from a copy).
    other = np.where(mask, np.sqrt(np.clip(t1, 0, 1)) + rng.normal(0, 0.15, t1.shape), 0)
    return mask, {"correct": (t1, t2), "copy": (t1, copy), "second T1": (t1, other)}


def test_a_pair_that_is_not_a_t1_and_a_t2_is_flagged_naming_its_files(store):
    from colab_utils.data.qc import contrast_numbers

    mask, pairs = _contrast_pairs(store)
    records = {f"ok{i}": _record() for i in range(5)}
    for name, (t1, t2) in pairs.items():
        records[name] = {**_record(), **contrast_numbers(t1, t2, mask),
                         "t1": f"/scans/{name}_T1.nii.gz", "t2": f"/scans/{name}_T2.nii.gz"}
    numbers = {s: records[s]["corr_t1_t2"] for s in pairs}
    assert numbers["correct"] < -0.5 and 0.0 < numbers["second T1"] < 0.95, numbers
    flag_outliers(records)
    flagged = {s: r["qc_reasons"] for s, r in records.items() if r["outlier"]}
    assert set(flagged) == {"copy", "second T1"}, numbers
    assert "/scans/copy_T2.nii.gz is nearly the T1 /scans/copy_T1.nii.gz" in flagged["copy"]
    assert ("/scans/second T1_T2.nii.gz is ordered like its T1 /scans/second T1_T1.nii.gz"
            in flagged["second T1"]) and "a second T1" in flagged["second T1"]
    # Records written before these numbers existed are judged as before.
    old = {f"s{i}": _record() for i in range(5)}
    flag_outliers(old)
    assert not any(r["outlier"] for r in old.values())
