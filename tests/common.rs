//! Fixture access shared by the test modules.

use std::path::PathBuf;

use agentcpt_model::burn::tensor::Device;
use agentcpt_model::weights::TensorMap;
use serde_json::Value;

/// The parity fixtures written by `tests/fixtures/make_parity_fixtures.py`.
pub const CASES: [&str; 6] = [
    "dense",
    "dense_tied_bf16",
    "moe",
    "moe_yarn",
    "moe_packed",
    "dense_linear_rope",
];

pub fn case_dir(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/parity")
        .join(case)
}

pub fn device() -> Device {
    Device::flex()
}

/// `expected.safetensors` of a case: name → (shape, f32 values).
pub fn expected(case: &str) -> TensorMap {
    read_safetensors(&case_dir(case).join("expected.safetensors"))
}

pub fn expected_json(case: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(case_dir(case).join("expected.json")).unwrap())
        .unwrap()
}

pub fn read_safetensors(path: &std::path::Path) -> TensorMap {
    agentcpt_model::weights::read_safetensors(path).unwrap_or_else(|e| panic!("{e}"))
}

/// max |ours − ref| / max |ref|: the parity metric (≤ 1e-4 in f32).
pub fn relative_error(ours: &[f32], reference: &[f32]) -> f64 {
    assert_eq!(ours.len(), reference.len(), "element counts differ");
    let scale = reference.iter().fold(0f64, |m, &r| m.max((r as f64).abs()));
    let diff = ours
        .iter()
        .zip(reference)
        .fold(0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs()));
    diff / scale.max(f64::MIN_POSITIVE)
}

pub fn assert_close(what: &str, ours: &[f32], reference: &[f32]) {
    let err = relative_error(ours, reference);
    println!("{what}: relative error {err:.2e}");
    assert!(err <= 1e-4, "{what}: relative error {err:.3e} > 1e-4");
}
