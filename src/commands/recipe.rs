//! `agentcpt recipe NAME`: validate a recipe (`--dry-run`) or train it to the end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use agentcpt_datasets::{DataParallel, Loader};
use agentcpt_model::burn::tensor::FloatDType;
use agentcpt_model::info::{
    billions, human_bytes, param_counts, training_memory, StepMemoryOptions,
};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::device::{default_dtype, known_peak_tflops, parse_dtype, select, DeviceSpec};
use crate::recipe::LoadedRecipe;
use crate::train::trainer::{check_compatibility, eval_loader, model_config, Outcome, Trainer};

/// Validates everything reachable without training and prints the resolved plan.
pub fn dry_run(recipe: &LoadedRecipe) -> Result<()> {
    let config = model_config(recipe)?;
    check_compatibility(recipe, &config)?;
    // Opening the loaders checks every glob, file and schema, held-out sources included.
    let encoder = recipe.encoder()?;
    Loader::open(
        recipe.recipe.data.clone(),
        encoder.clone(),
        DataParallel::SINGLE,
    )?;
    eval_loader(recipe, &encoder)?;
    let r = &recipe.recipe;
    let counts = param_counts(&config);
    let steps = recipe.total_steps();
    println!("recipe        {} ({})", r.run.name, recipe.path.display());
    println!("output        {}", recipe.output_dir().display());
    println!(
        "model         {} {:?}: {} total / {} active parameters, rope {:?}",
        config.architecture.model_type(),
        r.model.init,
        billions(counts.total),
        billions(counts.active),
        config.rope_scaling
    );
    println!("steps         {steps} × {} tokens ({} sequences of {} per micro-batch × {} accumulation steps) = {} tokens",
        r.train.global_batch_tokens, r.train.micro_batch, r.data.seq_len, recipe.accumulation_steps(), steps * r.train.global_batch_tokens);
    let total: f64 = r.data.sources.iter().map(|s| s.weight).sum();
    for s in &r.data.sources {
        println!(
            "data          {:<16} {:>5.1}% of tokens  {:?}",
            s.name,
            100.0 * s.weight / total,
            s.paths
        );
    }
    println!(
        "optimizer     AdamW lr {} betas {:?} wd {} clip {}; schedule {:?}",
        r.optimizer.lr,
        r.optimizer.betas,
        r.optimizer.weight_decay,
        r.optimizer.max_grad_norm,
        r.schedule
    );
    let compute_dtype = compute_dtype(recipe)?;
    let bytes = if compute_dtype == FloatDType::F32 {
        4
    } else {
        2
    };
    let step = StepMemoryOptions {
        recompute_every: r.runtime.recompute_every,
        loss_chunk: r.runtime.loss_chunk,
        attention_block: r.runtime.attention_block,
    };
    let memory = training_memory(&config, r.data.seq_len, r.train.micro_batch, bytes, &step);
    println!(
        "memory        ≈ {} per step ({compute_dtype:?} compute on f32 master weights; see `agentcpt model info`)",
        human_bytes(memory.total())
    );
    println!("ok: the recipe is valid");
    Ok(())
}

fn device_spec(recipe: &LoadedRecipe) -> Result<DeviceSpec> {
    recipe
        .recipe
        .runtime
        .device
        .parse()
        .with_context(|| format!("{}: `runtime.device`", recipe.path.display()))
}

/// `model.dtype`, or the device's default.
fn compute_dtype(recipe: &LoadedRecipe) -> Result<FloatDType> {
    match recipe.recipe.model.dtype.as_deref() {
        Some(d) => parse_dtype(d),
        None => Ok(default_dtype(&device_spec(recipe)?)),
    }
}

/// Trains the recipe; Ctrl-C writes a checkpoint and exits cleanly.
pub fn train(recipe: LoadedRecipe, fresh: bool) -> Result<()> {
    let spec = device_spec(&recipe)?;
    if let Some(threads) = recipe.recipe.runtime.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .with_context(|| format!("{}: `runtime.threads`", recipe.path.display()))?;
    }
    let compute_dtype = compute_dtype(&recipe)?;
    // Master weights and optimizer state are f32 whatever the compute dtype.
    let device = select(&spec, Some(FloatDType::F32))?;
    if !device.supports_dtype(compute_dtype) {
        bail!(
            "{}: `model.dtype`: {device:?} cannot compute in {compute_dtype:?}",
            recipe.path.display()
        );
    }
    let peak_tflops = recipe
        .recipe
        .runtime
        .peak_tflops
        .or_else(|| known_peak_tflops(&spec, compute_dtype));
    eprintln!(
        "compute {compute_dtype:?}, master weights f32; MFU against {}",
        peak_tflops.map_or("nothing (set `runtime.peak_tflops`)".into(), |p| format!(
            "a {p} TFLOP/s peak"
        ))
    );
    let total = recipe.total_steps();
    let mut trainer = Trainer::new(recipe, device.autodiff(), compute_dtype, peak_tflops, fresh)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("cannot install the Ctrl-C handler")?;
    let bar = ProgressBar::new(total).with_position(trainer.step());
    bar.set_style(
        ProgressStyle::with_template("{bar:30} step {pos}/{len} {msg} ETA {eta}")
            .expect("valid template"),
    );
    let outcome = trainer.run(&stop, |m| {
        bar.set_position(m["step"].as_u64().unwrap_or(0));
        bar.set_message(format!(
            "loss {:.4} lr {:.2e} {:.0} tok/s {} tokens",
            m["loss"].as_f64().unwrap_or(f64::NAN),
            m["lr"].as_f64().unwrap_or(0.0),
            m["tokens_per_s"].as_f64().unwrap_or(0.0),
            m["tokens"]
        ));
    })?;
    bar.finish();
    match outcome {
        Outcome::Finished => println!(
            "finished: {} (checkpoints and metrics.jsonl)",
            trainer.run_dir().display()
        ),
        Outcome::Interrupted => println!(
            "interrupted at step {}: checkpoint written to {}",
            trainer.step(),
            trainer.run_dir().display()
        ),
    }
    Ok(())
}
