//! Fixture access shared by the test modules.

use std::collections::HashMap;
use std::path::PathBuf;

use agentcpt_model::burn::tensor::Device;
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
pub fn expected(case: &str) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    read_safetensors(&case_dir(case).join("expected.safetensors"))
}

pub fn expected_json(case: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(case_dir(case).join("expected.json")).unwrap())
        .unwrap()
}

pub fn read_safetensors(path: &std::path::Path) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            let values = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (name, (view.shape().to_vec(), values))
        })
        .collect()
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
