//! The tolerance checks of the parity tests can fail: a NaN or an infinity in either the
//! output or the reference is a failure, never a pass (issue 15, "Tests that can fail": the
//! old helper folded differences with `f32::max`, which drops NaN, so a NaN output passed).

mod common;

use common::{assert_close, check_close, max_abs_difference, nan_max, TOLERANCE};

#[test]
fn equal_and_nearly_equal_slices_pass() {
    assert_eq!(
        check_close("same", &[1.0, -2.0], &[1.0, -2.0], TOLERANCE),
        Ok(())
    );
    let near = [1.0 + TOLERANCE / 2.0, -2.0];
    assert_eq!(check_close("near", &near, &[1.0, -2.0], TOLERANCE), Ok(()));
    assert_eq!(check_close("empty", &[], &[], TOLERANCE), Ok(()));
}

#[test]
fn a_difference_over_the_tolerance_fails() {
    let err = check_close("far", &[1.0, 2.0], &[1.0, 2.1], TOLERANCE).unwrap_err();
    assert!(err.starts_with("far: max abs difference"), "{err}");
}

#[test]
fn a_nan_on_either_side_fails_wherever_it_is() {
    let reference = [0.25f32, 0.5, 0.75];
    for at in 0..reference.len() {
        let mut ours = reference;
        ours[at] = f32::NAN;
        assert!(
            check_close("ours", &ours, &reference, TOLERANCE).is_err(),
            "NaN at {at}"
        );
        assert!(
            check_close("ref", &reference, &ours, TOLERANCE).is_err(),
            "NaN at {at}"
        );
    }
}

#[test]
fn infinities_fail_even_when_they_match() {
    // inf - inf is NaN: an overflowed output must not pass against an overflowed reference.
    assert!(check_close("inf", &[f32::INFINITY], &[f32::INFINITY], TOLERANCE).is_err());
    assert!(check_close("inf", &[f32::INFINITY], &[1.0], TOLERANCE).is_err());
}

#[test]
fn lengths_that_differ_fail() {
    assert!(check_close("len", &[1.0], &[1.0, 2.0], TOLERANCE).is_err());
}

#[test]
fn the_fold_keeps_a_nan_once_seen() {
    // Both orders: f32::max would return 0.5 for either.
    assert!(nan_max(0.5, f32::NAN).is_nan());
    assert!(nan_max(f32::NAN, 0.5).is_nan());
    assert_eq!(nan_max(0.25, 0.5), 0.5);
    assert_eq!(nan_max(0.5, 0.25), 0.5);
    assert!(max_abs_difference(&[f32::NAN, 9.0], &[0.0, 0.0]).is_nan());
    assert_eq!(max_abs_difference(&[1.0, 9.0], &[0.0, 0.0]), 9.0);
}

#[test]
#[should_panic(expected = "max abs difference NaN")]
fn assert_close_panics_on_a_nan_output() {
    assert_close("logits", &[0.1, f32::NAN, 0.3], &[0.1, 0.2, 0.3]);
}
