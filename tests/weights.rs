//! Checkpoint I/O: sharded save → load round trips, dtype conversion, random init.

use agentcpt_model::weights::{save_pretrained, SaveDType, SaveOptions};
use agentcpt_model::{Qwen3, Qwen3Config};

use crate::common::{case_dir, device};

fn all_values(model: &Qwen3) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    model
        .named_tensors()
        .iter()
        .map(|t| (t.name().to_string(), t.shape(), t.to_f32_vec()))
        .collect()
}

#[test]
fn sharded_f32_save_reloads_bit_exactly() {
    let device = device();
    let model = Qwen3::load(case_dir("moe"), &device).unwrap();
    let out = tempfile::tempdir().unwrap();
    let options = SaveOptions {
        dtype: SaveDType::F32,
        max_shard_bytes: 40_000,
    };
    save_pretrained(&model.named_tensors(), &model.config, out.path(), &options).unwrap();
    let shards = std::fs::read_dir(out.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".safetensors")
        })
        .count();
    assert!(shards >= 3, "expected several shards, got {shards}");
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        index["weight_map"].as_object().unwrap().len(),
        model.named_tensors().len()
    );
    let reloaded = Qwen3::load(out.path(), &device).unwrap();
    assert_eq!(all_values(&model), all_values(&reloaded));
}

#[test]
fn bf16_save_rounds_to_nearest_bf16() {
    let device = device();
    let model = Qwen3::load(case_dir("dense"), &device).unwrap();
    let out = tempfile::tempdir().unwrap();
    save_pretrained(
        &model.named_tensors(),
        &model.config,
        out.path(),
        &SaveOptions::default(),
    )
    .unwrap();
    assert!(
        out.path().join("model.safetensors").exists(),
        "one shard is saved unsharded"
    );
    let reloaded = Qwen3::load(out.path(), &device).unwrap();
    for ((name, _, a), (_, _, b)) in all_values(&model).iter().zip(all_values(&reloaded)) {
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(half::bf16::from_f32(*x).to_f32(), *y, "{name}");
        }
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["torch_dtype"], "bfloat16");
    assert_eq!(config["head_dim"], 32);
}

#[test]
fn tied_checkpoint_saves_without_lm_head() {
    let device = device();
    let model = Qwen3::load(case_dir("dense_tied_bf16"), &device).unwrap();
    assert!(model.lm_head.is_none());
    assert!(model
        .named_tensors()
        .iter()
        .all(|t| t.name() != "lm_head.weight"));
}

#[test]
fn random_init_follows_initializer_range() {
    let device = device();
    let mut config = Qwen3Config::from_file(case_dir("moe").join("config.json")).unwrap();
    config.initializer_range = 0.02;
    device.seed(3);
    let model = Qwen3::random(config, &device);
    let tensors = model.named_tensors();
    let embed = tensors[0].to_f32_vec();
    let n = embed.len() as f64;
    let mean = embed.iter().map(|&x| x as f64).sum::<f64>() / n;
    let std = (embed
        .iter()
        .map(|&x| (x as f64 - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    assert!(
        mean.abs() < 2e-3 && (std - 0.02).abs() < 2e-3,
        "mean {mean}, std {std}"
    );
    let norm = tensors
        .iter()
        .find(|t| t.name() == "model.norm.weight")
        .unwrap()
        .to_f32_vec();
    assert!(norm.iter().all(|&w| w == 1.0));
}
