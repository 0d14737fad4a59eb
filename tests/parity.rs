//! Parity with Hugging Face transformers: logits, CE loss, aux loss, total loss and
//! gradients of named parameters on every recorded case (f32, flex).

use agentcpt::commands::model::ForwardInputs;
use agentcpt_model::burn::tensor::Tensor;
use agentcpt_model::Qwen3;

use crate::common::{assert_close, case_dir, device, expected, expected_json, CASES};

fn values<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
    t.to_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

fn check_case(case: &str) {
    let device = device().autodiff();
    let dir = case_dir(case);
    let model = Qwen3::load(&dir, &device).unwrap_or_else(|e| panic!("{case}: {e}"));
    let inputs = ForwardInputs::read(&dir.join("inputs.json")).unwrap();
    let ids = model.token_tensor(&inputs.input_ids, &device).unwrap();
    let layout = inputs.layout(&device).unwrap();
    let out = model.forward(ids, &layout);
    let loss = model.loss(
        &out,
        inputs.labels(&model, &device).unwrap(),
        model.default_aux_coef(),
    );
    let want = expected(case);
    let meta = expected_json(case);

    let (shape, logits) = &want["logits"];
    assert_eq!(&out.logits.dims().to_vec(), shape, "{case}: logits shape");
    assert_close(&format!("{case} logits"), &values(&out.logits), logits);
    assert_close(
        &format!("{case} loss"),
        &values(&loss.ce.mean()),
        &want["loss"].1,
    );
    assert_close(
        &format!("{case} total_loss"),
        &values(&loss.total),
        &want["total_loss"].1,
    );
    match (&loss.aux, want.get("aux_loss")) {
        (Some(aux), Some((_, reference))) => {
            assert_close(&format!("{case} aux_loss"), &values(aux), reference)
        }
        (None, None) => {}
        (ours, theirs) => panic!(
            "{case}: aux loss present here: {}, in fixture: {}",
            ours.is_some(),
            theirs.is_some()
        ),
    }

    let grads = loss.total.backward();
    let names: Vec<String> = serde_json::from_value(meta["grads"].clone()).unwrap();
    assert!(!names.is_empty(), "{case}: fixture lists no gradients");
    let params = model.named_tensors();
    for name in names {
        let param = params
            .iter()
            .find(|p| p.name() == name)
            .unwrap_or_else(|| panic!("{case}: no parameter `{name}`"));
        let grad = param
            .grad(&grads)
            .unwrap_or_else(|| panic!("{case}: `{name}` got no gradient"));
        let (shape, reference) = &want[&format!("grad.{name}")];
        assert_eq!(&grad.shape(), shape, "{case}: grad shape of {name}");
        assert_close(
            &format!("{case} grad {name}"),
            &grad.to_f32_vec(),
            reference,
        );
    }
}

#[test]
fn every_case_matches_transformers() {
    for case in CASES {
        check_case(case);
    }
}

/// The packed row's documents must not see each other: each document's logits equal
/// those of the document run alone.
#[test]
fn packed_documents_do_not_attend_across_the_boundary() {
    let device = device();
    let dir = case_dir("moe_packed");
    let model = Qwen3::load(&dir, &device).unwrap();
    let inputs = ForwardInputs::read(&dir.join("inputs.json")).unwrap();
    let row = &inputs.input_ids[0];
    let positions = &inputs
        .position_ids
        .as_ref()
        .expect("packed fixture has positions")[0];
    let split = positions
        .iter()
        .skip(1)
        .position(|&p| p == 0)
        .expect("two documents")
        + 1;
    let packed = model
        .forward(
            model.token_tensor(&inputs.input_ids, &device).unwrap(),
            &inputs.layout(&device).unwrap(),
        )
        .logits;
    let vocab = packed.dims()[2];
    for (start, end) in [(0, split), (split, row.len())] {
        let alone = model
            .forward(
                model
                    .token_tensor(&[row[start..end].to_vec()], &device)
                    .unwrap(),
                &agentcpt_model::SequenceLayout::contiguous(1, end - start, 0, &device),
            )
            .logits;
        let part = packed
            .clone()
            .narrow(1, start, end - start)
            .reshape([1, end - start, vocab]);
        assert_close("packed document vs alone", &values(&part), &values(&alone));
    }
}

/// The same parity on wgpu (Mesa lavapipe in CI): the CubeCL kernels that run on GPUs.
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_matches_transformers() {
    use agentcpt_model::burn::tensor::{Device, DeviceKind};
    let device = Device::wgpu(DeviceKind::DefaultDevice).autodiff();
    // moe_yarn has a dense layer 0 and an MoE layer 1, so it covers both block kinds.
    for case in ["moe_yarn", "moe_packed"] {
        let dir = case_dir(case);
        let model = Qwen3::load(&dir, &device).unwrap();
        let inputs = ForwardInputs::read(&dir.join("inputs.json")).unwrap();
        let out = model.forward(
            model.token_tensor(&inputs.input_ids, &device).unwrap(),
            &inputs.layout(&device).unwrap(),
        );
        let loss = model.loss(
            &out,
            inputs.labels(&model, &device).unwrap(),
            model.default_aux_coef(),
        );
        let want = expected(case);
        assert_close(
            &format!("wgpu {case} logits"),
            &values(&out.logits),
            &want["logits"].1,
        );
        assert_close(
            &format!("wgpu {case} total_loss"),
            &values(&loss.total),
            &want["total_loss"].1,
        );
        let grads = loss.total.backward();
        let q = "model.layers.0.self_attn.q_proj.weight";
        let param = model
            .named_tensors()
            .into_iter()
            .find(|p| p.name() == q)
            .unwrap();
        let grad = param.grad(&grads).expect("gradient on wgpu");
        assert_close(
            &format!("wgpu {case} grad {q}"),
            &grad.to_f32_vec(),
            &want[&format!("grad.{q}")].1,
        );
    }
}

/// The trainer's step — layers recomputed, loss head in chunks, blockwise attention — gives
/// transformers' loss and gradients.
fn check_step(case: &str, device: &agentcpt_model::burn::tensor::Device) {
    use agentcpt_model::burn::tensor::FloatDType;
    use agentcpt_model::step::StepOptions;
    let dir = case_dir(case);
    let model = Qwen3::load(&dir, device).unwrap_or_else(|e| panic!("{case}: {e}"));
    let inputs = ForwardInputs::read(&dir.join("inputs.json")).unwrap();
    let labels = inputs.labels(&model, device).unwrap();
    let counted = labels
        .clone()
        .narrow(1, 1, labels.dims()[1] - 1)
        .not_equal_elem(-100)
        .int()
        .sum()
        .into_scalar::<i64>();
    let aux_coef = model.default_aux_coef();
    let options = StepOptions {
        recompute_every: Some(1),
        loss_chunk: 3,
        ce_divisor: counted as f64,
        aux_coef,
        z_coef: None,
        compute_dtype: FloatDType::F32,
        attention_block: Some(4),
    };
    let out = model.loss_and_grads(
        model.token_tensor(&inputs.input_ids, device).unwrap(),
        labels,
        &inputs.layout(device).unwrap(),
        &options,
    );
    let want = expected(case);
    let total = out.ce_sum / counted as f64 + aux_coef.map_or(0.0, |c| c * out.aux.unwrap());
    assert_close(
        &format!("step {case} total_loss"),
        &[total as f32],
        &want["total_loss"].1,
    );
    let mut compared = 0;
    for (key, (_, reference)) in want.iter() {
        let Some(name) = key.strip_prefix("grad.") else {
            continue;
        };
        let mut matching = out.grads.iter().filter(|g| g.name() == name);
        let sum = matching
            .next()
            .unwrap_or_else(|| panic!("step {case}: no gradient for {name}"))
            .to_f32_vec();
        assert!(
            matching.next().is_none(),
            "step {case}: two gradients for {name}"
        );
        assert_close(&format!("step {case} grad {name}"), &sum, reference);
        compared += 1;
    }
    assert!(compared > 0, "{case}: the fixture records gradients");
}

#[test]
fn step_with_recomputation_and_blockwise_attention_matches_transformers() {
    for case in CASES {
        check_step(case, &device().autodiff());
    }
}

/// The blockwise attention and the segmented step on wgpu (Mesa lavapipe in CI).
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_step_with_blockwise_attention_matches_transformers() {
    use agentcpt_model::burn::tensor::{Device, DeviceKind};
    let device = Device::wgpu(DeviceKind::DefaultDevice).autodiff();
    for case in ["moe_yarn", "moe_packed"] {
        check_step(case, &device);
    }
}

/// The CubeCL attention kernels on `gpu` against materialising attention differentiated by
/// autodiff on flex: output and q/k/v gradients, causal and packed (documents ending inside
/// tiles and spanning them, one starting in the last, partial tile), grouped queries, at
/// head dimensions with different tiles (64 positions at D = 16, 32 at D = 64).
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn check_attention_kernels(gpu: &agentcpt_model::burn::tensor::Device) {
    use agentcpt_model::attention::attend;
    use agentcpt_model::burn::tensor::{Device, Distribution};
    use agentcpt_model::flash_cube;
    use agentcpt_model::SequenceLayout;

    let host = Device::flex().autodiff();
    let (b, h, kv, s) = (2, 4, 2, 150);
    for d in [16, 64] {
        let normal =
            |heads| Tensor::<4>::random([b, heads, s, d], Distribution::Normal(0.0, 1.0), &host);
        let (q, k, v, dout) = (normal(h), normal(kv), normal(kv), normal(h));
        for packed in [false, true] {
            let layout = |device: &Device| {
                if packed {
                    let rows = [vec![70, 80], vec![5, 60, 70, 15]];
                    SequenceLayout::from_document_lengths(&rows, s, device).unwrap()
                } else {
                    SequenceLayout::contiguous(b, s, 0, device)
                }
            };
            let case = format!("D {d}, {}", if packed { "packed" } else { "causal" });
            let (qt, kt, vt) = (
                q.clone().require_grad(),
                k.clone().require_grad(),
                v.clone().require_grad(),
            );
            let mask = layout(&host).attention_mask(0);
            let reference = attend(qt.clone(), kt.clone(), vt.clone(), &mask);
            let grads = reference.clone().mul(dout.clone()).sum().backward();

            let on_gpu = |t: &Tensor<4>| t.clone().to_device(gpu);
            let gpu_layout = layout(gpu);
            let fwd = flash_cube::forward(on_gpu(&q), on_gpu(&k), on_gpu(&v), &gpu_layout);
            let (dq, dk, dv) = flash_cube::backward(
                on_gpu(&q),
                on_gpu(&k),
                on_gpu(&v),
                &fwd,
                on_gpu(&dout),
                &gpu_layout,
            );
            let grad = |t: &Tensor<4>| values(&t.grad(&grads).unwrap());
            assert_close(
                &format!("{case}: out"),
                &values(&fwd.out),
                &values(&reference),
            );
            assert_close(&format!("{case}: dq"), &values(&dq), &grad(&qt));
            assert_close(&format!("{case}: dk"), &values(&dk), &grad(&kt));
            assert_close(&format!("{case}: dv"), &values(&dv), &grad(&vt));
        }
    }
}

/// The attention kernels on wgpu (Mesa lavapipe in CI).
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_attention_kernels_match_materialising_attention() {
    use agentcpt_model::burn::tensor::{Device, DeviceKind};
    check_attention_kernels(&Device::wgpu(DeviceKind::DefaultDevice).autodiff());
}

/// The attention kernels on CUDA (`cargo test --features cuda --test integration cuda`).
#[cfg(feature = "cuda")]
#[test]
fn cuda_attention_kernels_match_materialising_attention() {
    use agentcpt_model::burn::tensor::Device;
    check_attention_kernels(&Device::cuda(0).autodiff());
}
