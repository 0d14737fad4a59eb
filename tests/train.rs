//! The trainer as users run it: the tiny curriculum, exact resume after `kill -9`, the
//! non-finite policy, mixed precision, recipe validation, TensorBoard files and reports.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cli::{agentcpt, stderr};

fn recipe(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("recipes")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn train(recipe: &str, sets: &[String]) -> Output {
    let mut args = vec!["recipe", recipe];
    for s in sets {
        args.extend(["--set", s.as_str()]);
    }
    agentcpt(&args)
}

fn metrics(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// What must be identical between an interrupted-and-resumed run and an uninterrupted one.
fn trajectory(records: &[Value]) -> Vec<(u64, String, String, String)> {
    records
        .iter()
        .map(|r| {
            (
                r["step"].as_u64().unwrap(),
                r["loss"].to_string(),
                r["grad_norm"].to_string(),
                r["lr"].to_string(),
            )
        })
        .collect()
}

fn stage1_sets(run: &Path, steps: u64) -> Vec<String> {
    vec![
        format!("run.output_dir=\"{}\"", run.display()),
        format!("train.steps={steps}"),
        "checkpoint.every=1".into(),
        "checkpoint.keep=2".into(),
    ]
}

/// Trains `steps` steps of tiny stage 1 into `dir` with checkpoints at the end only.
fn short_run(dir: &Path, steps: u64, extra: &[&str]) -> Vec<Value> {
    let mut sets = stage1_sets(dir, steps);
    sets.push("checkpoint.every=0".into());
    sets.extend(extra.iter().map(|s| s.to_string()));
    let o = train(&recipe("tiny-stage1.toml"), &sets);
    assert!(o.status.success(), "{}", stderr(&o));
    metrics(dir)
}

#[test]
fn tiny_curriculum_runs_stage1_then_stage2() {
    let tmp = tempfile::tempdir().unwrap();
    let stage1 = tmp.path().join("stage1");
    let o = train(
        &recipe("tiny-stage1.toml"),
        &[
            format!("run.output_dir=\"{}\"", stage1.display()),
            "train.steps=12".into(),
            "checkpoint.every=1".into(),
            "metrics.tensorboard=true".into(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let m = metrics(&stage1);
    assert_eq!(m.len(), 12);
    let first = m[0]["loss"].as_f64().unwrap();
    let last = m[11]["loss"].as_f64().unwrap();
    assert!(last < first - 0.5, "loss must fall: {first} → {last}");
    assert!(
        m[0]["tokens_per_expert"].as_array().unwrap().len() == 2,
        "two MoE layers logged"
    );
    let checkpoints: Vec<_> = std::fs::read_dir(stage1.join("checkpoints"))
        .unwrap()
        .collect();
    assert_eq!(checkpoints.len(), 2, "keep = 2");
    let events: Vec<_> = std::fs::read_dir(stage1.join("tensorboard"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(events.len(), 1);
    let scalars = std::fs::read(&events[0]).unwrap();
    let mut loss = vec![0x0a, 4];
    loss.extend_from_slice(b"loss");
    loss.push(0x15);
    loss.extend_from_slice(&(last as f32).to_le_bytes());
    assert!(
        scalars.windows(loss.len()).any(|w| w == loss.as_slice()),
        "the last step's loss is in the event file"
    );
    assert_report(&stage1);

    let stage2 = tmp.path().join("stage2");
    let o = train(
        &recipe("tiny-stage2.toml"),
        &[
            format!("run.output_dir=\"{}\"", stage2.display()),
            format!("model.path=\"{}\"", stage1.display()),
            "train.steps=2".into(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let m2 = metrics(&stage2);
    assert_eq!(m2.len(), 2);
    assert!(
        m2[0]["loss"].as_f64().unwrap() < first - 0.5,
        "stage 2 starts from stage 1's weights, not from scratch"
    );
    let newest = std::fs::read_dir(stage2.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(newest.join("model/config.json")).unwrap())
            .unwrap();
    assert_eq!(config["rope_scaling"]["rope_type"], "yarn");
    assert_eq!(config["rope_scaling"]["factor"], 4.0);
    assert_eq!(config["max_position_embeddings"], 1024);
}

#[test]
fn resume_after_kill_reproduces_the_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let steps = 8;
    let reference = tmp.path().join("reference");
    let o = train(&recipe("tiny-stage1.toml"), &stage1_sets(&reference, steps));
    assert!(o.status.success(), "{}", stderr(&o));
    let expected = trajectory(&metrics(&reference));
    assert_eq!(expected.len(), steps as usize);

    for (i, kill_after) in [1usize, 3, 4, 6, 7].into_iter().enumerate() {
        let run = tmp.path().join(format!("killed-{i}"));
        let mut args: Vec<String> = vec!["recipe".into(), recipe("tiny-stage1.toml")];
        for s in stage1_sets(&run, steps) {
            args.extend(["--set".into(), s]);
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_agentcpt"))
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        let complete_lines = || {
            std::fs::read_to_string(run.join("metrics.jsonl"))
                .map_or(0, |t| t.matches('\n').count())
        };
        while complete_lines() < kill_after && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL: no chance to clean up
        child.wait().unwrap();
        assert!(
            complete_lines() < steps as usize,
            "killed after {kill_after}: the run had already finished"
        );
        let o = train(&recipe("tiny-stage1.toml"), &stage1_sets(&run, steps));
        assert!(o.status.success(), "resume {i}: {}", stderr(&o));
        if kill_after >= 2 {
            // Step 1's checkpoint was complete before step 2's metrics were written.
            assert!(
                stderr(&o).contains("resuming tiny-stage1"),
                "killed after {kill_after}: did not resume: {}",
                stderr(&o)
            );
        }
        assert_eq!(
            trajectory(&metrics(&run)),
            expected,
            "killed after {kill_after} steps"
        );
    }
}

#[test]
fn a_nan_gradient_is_skipped_and_the_run_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("nan");
    let o = Command::new(env!("CARGO_BIN_EXE_agentcpt"))
        .args([
            "recipe",
            &recipe("tiny-stage1.toml"),
            "--set",
            &format!("run.output_dir=\"{}\"", run.display()),
            "--set",
            "train.steps=5",
        ])
        .env("AGENTCPT_INJECT_NAN_STEPS", "2")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let m = metrics(&run);
    assert_eq!(m.len(), 5);
    assert_eq!(m[2]["skipped"], true);
    assert_eq!(m[4]["skipped_steps"], 1);
    assert!(m[4]["loss"].as_f64().unwrap().is_finite());

    let o = Command::new(env!("CARGO_BIN_EXE_agentcpt"))
        .args([
            "recipe",
            &recipe("tiny-stage1.toml"),
            "--set",
            &format!("run.output_dir=\"{}\"", tmp.path().join("nan2").display()),
            "--set",
            "train.steps=8",
            "--set",
            "train.max_consecutive_skips=2",
            "--fresh",
        ])
        .env("AGENTCPT_INJECT_NAN_STEPS", "3,4")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("2 consecutive steps"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn dry_run_validates_the_model_against_the_recipe() {
    let tmp = tempfile::tempdir().unwrap();
    let o = agentcpt(&["recipe", &recipe("tiny-stage1.toml"), "--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let plan = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        plan.contains("40 × 1024 tokens") && plan.contains("ok: the recipe is valid"),
        "{plan}"
    );

    let o = agentcpt(&[
        "recipe",
        &recipe("tiny-stage1.toml"),
        "--dry-run",
        "--set",
        "data.seq_len=512",
        "--set",
        "train.global_batch_tokens=1024",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("`data.seq_len` = 512 is longer than the model supports"),
        "{}",
        stderr(&o)
    );

    let config = tmp.path().join("small-vocab.json");
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("recipes/models/tiny-moe/config.json"),
    )
    .unwrap();
    std::fs::write(
        &config,
        text.replace("\"vocab_size\": 272", "\"vocab_size\": 200"),
    )
    .unwrap();
    let o = agentcpt(&[
        "recipe",
        &recipe("tiny-stage1.toml"),
        "--dry-run",
        "--set",
        &format!("model.config=\"{}\"", config.display()),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("vocab_size is 200"), "{}", stderr(&o));

    let o = agentcpt(&[
        "recipe",
        &recipe("tiny-stage1.toml"),
        "--dry-run",
        "--set",
        "train.global_batch_tokens=1000",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("train.global_batch_tokens"),
        "{}",
        stderr(&o)
    );

    // Held-out sources are checked too, not only at the first evaluation.
    let o = agentcpt(&[
        "recipe",
        &recipe("tiny-stage1.toml"),
        "--dry-run",
        "--set",
        r#"eval.sources=[{name = "heldout", paths = ["data/tiny/missing-*.parquet"], weight = 1.0}]"#,
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("`eval.sources`") && stderr(&o).contains("missing-*.parquet"),
        "{}",
        stderr(&o)
    );
}

/// `agentcpt report` draws every chart, as a PNG of the default size and an SVG with labels.
fn assert_report(run: &Path) {
    let out = run.join("charts");
    let o = agentcpt(&[
        "report",
        run.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for chart in ["loss", "throughput", "optimizer", "expert_load"] {
        let png = std::fs::read(out.join(format!("{chart}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{chart}.png");
        let (width, height) = (
            u32::from_be_bytes(png[16..20].try_into().unwrap()),
            u32::from_be_bytes(png[20..24].try_into().unwrap()),
        );
        assert_eq!((width, height), (1000, 700), "{chart}.png");
        let svg = std::fs::read_to_string(out.join(format!("{chart}.svg"))).unwrap();
        assert!(
            svg.contains("<svg") && svg.contains("</svg>"),
            "{chart}.svg"
        );
    }
    let loss = std::fs::read_to_string(out.join("loss.svg")).unwrap();
    assert!(loss.contains("held-out: heldout") && loss.contains("train: has"));
    assert!(loss.matches("<polyline").count() >= 5, "train + 4 sources");
}

#[test]
fn report_names_the_line_of_a_bad_metrics_record() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("metrics.jsonl"),
        "{\"step\": 1, \"loss\": 2.0}\n{\"step\": 2, \"loss\": \n",
    )
    .unwrap();
    let o = agentcpt(&["report", tmp.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("metrics.jsonl:2"), "{}", stderr(&o));
    let o = agentcpt(&["report", tmp.path().join("missing").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read"), "{}", stderr(&o));
}

/// bf16 compute on f32 master weights: close to the f32 run but not identical to it, the
/// checkpoint holds f32 weights, and the router z-loss is logged.
#[test]
fn mixed_precision_trains_bf16_on_f32_master_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let f32_run = short_run(&tmp.path().join("f32"), 6, &[]);
    let dir = tmp.path().join("bf16");
    let bf16_run = short_run(
        &dir,
        6,
        &["model.dtype=\"bf16\"", "loss.router_z_loss_coef=0.001"],
    );
    let loss = |m: &[Value], i: usize| m[i]["loss"].as_f64().unwrap();
    let first_gap = (loss(&bf16_run, 0) - loss(&f32_run, 0)).abs();
    assert!(
        first_gap > 0.0 && first_gap < 0.02,
        "step 1 loss differs from f32 by {first_gap}"
    );
    assert!(loss(&bf16_run, 5) < loss(&bf16_run, 0) - 0.3, "loss falls");
    let z = bf16_run[0]["z_loss"].as_f64().unwrap();
    assert!(z.is_finite() && z > 0.0);
    assert!(f32_run[0]["z_loss"].is_null(), "off unless asked for");
    let bytes =
        std::fs::read(dir.join("checkpoints/step-00000006/model/model.safetensors")).unwrap();
    let weights = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(weights
        .tensors()
        .iter()
        .all(|(_, t)| t.dtype() == safetensors::Dtype::F32));
}

/// Layer recomputation changes memory, not results: the loss sequence is identical; a
/// chunked loss head and blockwise attention change only the order of sums.
#[test]
fn recomputed_layers_chunked_loss_and_blockwise_attention_train_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, extra: &[&str]| short_run(&tmp.path().join(name), 5, extra);
    let plain = run("plain", &[]);
    let recomputed = run("recomputed", &["runtime.recompute_every=1"]);
    assert_eq!(trajectory(&plain), trajectory(&recomputed));
    let chunked = run(
        "chunked",
        &["runtime.recompute_every=2", "runtime.loss_chunk=37"],
    );
    let blockwise = run(
        "blockwise",
        &["runtime.attention_block=48", "runtime.loss_chunk=100"],
    );
    for other in [&chunked, &blockwise] {
        assert_eq!(other.len(), plain.len());
        for (a, b) in plain.iter().zip(other) {
            let (a, b) = (a["loss"].as_f64().unwrap(), b["loss"].as_f64().unwrap());
            assert!((a - b).abs() <= 1e-5 * a, "{a} vs {b}");
        }
    }
}
