//! The `agentcpt` binary as users run it: outputs, and clear errors with exit code 2 on
//! bad input (never a panic).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

use crate::common::{assert_close, case_dir, expected, read_safetensors};

pub fn agentcpt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentcpt"))
        .args(args)
        .output()
        .expect("agentcpt runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn copy_case(case: &str, to: &Path) -> PathBuf {
    let dst = to.join(case);
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(case_dir(case)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
    }
    dst
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let path = dir.join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(config.as_object_mut().unwrap());
    std::fs::write(path, serde_json::to_string(&config).unwrap()).unwrap();
}

fn first_shard(dir: &Path) -> PathBuf {
    let mut shards: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "safetensors")
                && p.file_name().unwrap() != "expected.safetensors"
        })
        .collect();
    shards.sort();
    shards.remove(0)
}

/// `agentcpt model forward` on the CPU.
fn forward(dir: &Path, inputs: &Path, out: &Path) -> Output {
    agentcpt(&[
        "model",
        "forward",
        "--model",
        dir.to_str().unwrap(),
        "--input-ids",
        inputs.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ])
}

/// Runs `model forward` on `dir` and returns the failed run.
fn forward_fails(dir: &Path, inputs: &Path) -> Output {
    let out = dir.join("out.safetensors");
    let o = forward(dir, inputs, &out);
    assert_eq!(
        o.status.code(),
        Some(2),
        "expected exit 2; stderr: {}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("panicked"), "panicked: {}", stderr(&o));
    assert!(!out.exists(), "no output may be written on error");
    o
}

#[test]
fn info_prints_qwen3_30b_a3b_sizes() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.json");
    std::fs::write(&config, json!({
        "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "vocab_size": 151936,
        "hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 48,
        "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128, "rms_norm_eps": 1e-6,
        "rope_theta": 1e6, "rope_scaling": null, "max_position_embeddings": 40960, "num_experts": 128,
        "num_experts_per_tok": 8, "moe_intermediate_size": 768, "norm_topk_prob": true,
        "decoder_sparse_step": 1, "mlp_only_layers": [], "router_aux_loss_coef": 0.001,
        "tie_word_embeddings": false, "torch_dtype": "bfloat16"
    }).to_string()).unwrap();
    let o = agentcpt(&[
        "model",
        "info",
        config.to_str().unwrap(),
        "--seq-len",
        "32768",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("30.5B total / 3.3B active"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("training memory"), "{}", stdout(&o));
}

#[test]
fn forward_writes_logits_and_losses_matching_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.safetensors");
    let dir = case_dir("moe_packed");
    let o = forward(&dir, &dir.join("inputs.json"), &out);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let ours = read_safetensors(&out);
    let want = expected("moe_packed");
    for name in ["logits", "loss", "aux_loss", "total_loss"] {
        assert_close(name, &ours[name].1, &want[name].1);
    }
    let loss = summary["loss"].as_f64().unwrap() as f32;
    assert_close("printed loss", &[loss], &want["loss"].1);
    let per_token = &ours["per_token_loss"];
    assert_eq!(per_token.0, vec![1, 19]);
    let mean = per_token.1.iter().sum::<f32>() / 19.0;
    assert_close("mean of per-token loss", &[mean], &want["loss"].1);
}

#[test]
fn init_then_convert_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let init = tmp.path().join("init");
    let converted = tmp.path().join("converted");
    let config = case_dir("moe").join("config.json");
    let o = agentcpt(&[
        "model",
        "init",
        "--config",
        config.to_str().unwrap(),
        "--out",
        init.to_str().unwrap(),
        "--seed",
        "5",
        "--save-dtype",
        "f32",
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = agentcpt(&[
        "model",
        "convert",
        "--model",
        init.to_str().unwrap(),
        "--out",
        converted.to_str().unwrap(),
        "--save-dtype",
        "f32",
        "--max-shard-bytes",
        "50000",
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(converted.join("model.safetensors.index.json").exists());
    let inputs = case_dir("moe").join("inputs.json");
    let run = |dir: &Path| {
        let out = tmp.path().join(format!(
            "{}.safetensors",
            dir.file_name().unwrap().to_string_lossy()
        ));
        let o = forward(dir, &inputs, &out);
        assert!(o.status.success(), "{}", stderr(&o));
        read_safetensors(&out)["logits"].1.clone()
    };
    assert_eq!(run(&init), run(&converted));
}

#[test]
fn generate_is_deterministic_and_stops() {
    let dir = case_dir("dense");
    let args = [
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt-ids",
        "[1, 2, 3]",
        "--max-new-tokens",
        "6",
        "--temperature",
        "0.8",
        "--seed",
        "11",
        "--device",
        "cpu",
    ];
    let a = agentcpt(&args);
    assert!(a.status.success(), "{}", stderr(&a));
    let b = agentcpt(&args);
    assert_eq!(stdout(&a), stdout(&b));
    let ids: Value = serde_json::from_str(stdout(&a).trim()).unwrap();
    let generated = ids["generated_ids"].as_array().unwrap();
    assert_eq!(generated.len(), 6);
    let stop = generated[2].as_i64().unwrap().to_string();
    let mut with_stop = args.to_vec();
    with_stop.extend(["--stop", &stop]);
    let c = agentcpt(&with_stop);
    let ids: Value = serde_json::from_str(stdout(&c).trim()).unwrap();
    let first = generated
        .iter()
        .position(|g| g.as_i64().unwrap().to_string() == stop)
        .unwrap();
    assert_eq!(ids["generated_ids"].as_array().unwrap().len(), first + 1);
}

#[test]
fn bad_configs_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = case_dir("dense").join("inputs.json");

    let dir = copy_case("dense", &tmp.path().join("unknown_type"));
    edit_config(&dir, |c| {
        c.insert("model_type".into(), "llama".into());
    });
    assert!(stderr(&forward_fails(&dir, &inputs)).contains("unknown model_type `llama`"));

    let dir = copy_case("dense", &tmp.path().join("missing_field"));
    edit_config(&dir, |c| {
        c.remove("hidden_size");
    });
    let e = stderr(&forward_fails(&dir, &inputs));
    assert!(
        e.contains("config.json") && e.contains("missing field `hidden_size`"),
        "{e}"
    );

    let dir = copy_case("dense", &tmp.path().join("wrong_shape"));
    edit_config(&dir, |c| {
        c.insert("intermediate_size".into(), 80.into());
    });
    let e = stderr(&forward_fails(&dir, &inputs));
    assert!(
        e.contains("model.layers.0.mlp.gate_proj.weight")
            && e.contains("[96, 64]")
            && e.contains("[80, 64]"),
        "{e}"
    );

    let dir = copy_case("dense", &tmp.path().join("extra_tensors"));
    edit_config(&dir, |c| {
        c.insert("num_hidden_layers".into(), 1.into());
    });
    let e = stderr(&forward_fails(&dir, &inputs));
    assert!(
        e.contains("do not belong to this config") && e.contains("model.layers.1."),
        "{e}"
    );
}

#[test]
fn bad_checkpoints_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = case_dir("moe").join("inputs.json");

    let dir = copy_case("moe", &tmp.path().join("truncated"));
    let shard = first_shard(&dir);
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() / 2]).unwrap();
    let e = stderr(&forward_fails(&dir, &inputs));
    assert!(
        e.contains(shard.file_name().unwrap().to_str().unwrap())
            && e.contains("truncated or corrupt"),
        "{e}"
    );

    let dir = copy_case("moe", &tmp.path().join("corrupt"));
    let shard = first_shard(&dir);
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[8..24].copy_from_slice(b"not a json head!");
    std::fs::write(&shard, bytes).unwrap();
    assert!(stderr(&forward_fails(&dir, &inputs)).contains("truncated or corrupt"));

    let dir = copy_case("moe", &tmp.path().join("missing_shard"));
    let shard = first_shard(&dir);
    std::fs::remove_file(&shard).unwrap();
    let e = stderr(&forward_fails(&dir, &inputs));
    assert!(
        e.contains("named in the index but")
            && e.contains(shard.file_name().unwrap().to_str().unwrap()),
        "{e}"
    );
}

#[test]
fn bad_inputs_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = case_dir("dense");
    let outside = tmp.path().join("outside.json");
    std::fs::write(&outside, "[[1, 2, 256, 3]]").unwrap();
    let e = stderr(&forward_fails(&dir, &outside));
    assert!(
        e.contains("token id 256 at row 0, position 2 is outside the vocabulary"),
        "{e}"
    );

    let ragged = tmp.path().join("ragged.json");
    std::fs::write(&ragged, "[[1, 2, 3], [1, 2]]").unwrap();
    assert!(stderr(&forward_fails(&dir, &ragged)).contains("row 1 has 2 entries"));

    let bad_label = tmp.path().join("bad_label.json");
    std::fs::write(
        &bad_label,
        r#"{"input_ids": [[1, 2, 3]], "labels": [[-100, 2, 999]]}"#,
    )
    .unwrap();
    let e = stderr(&forward_fails(&dir, &bad_label));
    assert!(e.contains("label 999 at row 0, position 2"), "{e}");

    let not_json = tmp.path().join("bad.json");
    std::fs::write(&not_json, "{\"tokens\": 3}").unwrap();
    assert!(stderr(&forward_fails(&dir, &not_json)).contains("bad.json"));

    let o = agentcpt(&["model", "info", dir.to_str().unwrap(), "--dtype", "fp8"]);
    assert_eq!(o.status.code(), Some(2));
    let o = agentcpt(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt-ids",
        "[1]",
        "--device",
        "tpu",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unknown device `tpu`"),
        "{}",
        stderr(&o)
    );
}
