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
