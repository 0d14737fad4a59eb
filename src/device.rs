//! `--device auto|cpu|wgpu|cuda[:N]`: picks among the backends compiled in (Cargo features
//! `flex`, `wgpu`, `cuda`) and sets the float dtype: bf16 on CUDA, f32 elsewhere, unless
//! the user asks otherwise.

use agentcpt_model::burn::tensor::{Device, FloatDType};
use anyhow::{bail, Context, Result};

/// A device string as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    Auto,
    Cpu,
    Wgpu,
    Cuda(usize),
}

impl std::str::FromStr for DeviceSpec {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "auto" => DeviceSpec::Auto,
            "cpu" => DeviceSpec::Cpu,
            "wgpu" => DeviceSpec::Wgpu,
            "cuda" => DeviceSpec::Cuda(0),
            _ => match s.strip_prefix("cuda:") {
                Some(n) => DeviceSpec::Cuda(
                    n.parse()
                        .with_context(|| format!("bad CUDA index in device `{s}`"))?,
                ),
                None => bail!("unknown device `{s}`: expected auto, cpu, wgpu, cuda or cuda:N"),
            },
        })
    }
}

/// Compute dtype: `None` takes the device's default (bf16 on CUDA, f32 elsewhere).
pub fn parse_dtype(s: &str) -> Result<FloatDType> {
    Ok(match s {
        "f32" | "float32" => FloatDType::F32,
        "bf16" | "bfloat16" => FloatDType::BF16,
        "f16" | "float16" => FloatDType::F16,
        _ => bail!("unknown dtype `{s}`: expected f32, bf16 or f16"),
    })
}

/// The compute dtype a device gets when none is asked for.
pub fn default_dtype(spec: &DeviceSpec) -> FloatDType {
    match spec {
        DeviceSpec::Cuda(_) => FloatDType::BF16,
        DeviceSpec::Auto if cfg!(feature = "cuda") => FloatDType::BF16,
        _ => FloatDType::F32,
    }
}

/// Dense bf16 peaks (TFLOP/s, SXM parts; no sparsity figures) of common NVIDIA GPUs, looked
/// up by the name `nvidia-smi` reports. MFU needs the peak of the dtype actually computed in,
/// so only bf16 on CUDA is recognised; other setups name their peak in the recipe.
const BF16_PEAKS: [(&str, f64); 5] = [
    ("B200", 2250.0),
    ("H200", 989.0),
    ("H100", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
];

pub fn known_peak_tflops(spec: &DeviceSpec, dtype: FloatDType) -> Option<f64> {
    let index = match spec {
        DeviceSpec::Cuda(i) => *i,
        DeviceSpec::Auto if cfg!(feature = "cuda") => 0,
        _ => return None,
    };
    if dtype != FloatDType::BF16 {
        return None;
    }
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader"])
        .output()
        .ok()?;
    let names = String::from_utf8(out.stdout).ok()?;
    let name = names.lines().nth(index)?;
    BF16_PEAKS
        .iter()
        .find(|(model, _)| name.contains(model))
        .map(|(_, peak)| *peak)
}

/// Resolves `spec` to a configured device; `auto` prefers CUDA, then wgpu, then the CPU.
pub fn select(spec: &DeviceSpec, dtype: Option<FloatDType>) -> Result<Device> {
    let mut device = match spec {
        DeviceSpec::Auto if cfg!(feature = "cuda") => return select(&DeviceSpec::Cuda(0), dtype),
        DeviceSpec::Auto if cfg!(feature = "wgpu") => return select(&DeviceSpec::Wgpu, dtype),
        DeviceSpec::Auto | DeviceSpec::Cpu => cpu()?,
        DeviceSpec::Wgpu => wgpu()?,
        DeviceSpec::Cuda(i) => cuda(*i)?,
    };
    let dtype = dtype.unwrap_or(default_dtype(spec));
    if !device.supports_dtype(dtype) {
        bail!("device {device:?} does not support {dtype:?} arithmetic; use --dtype f32");
    }
    device
        .configure(dtype)
        .map_err(|e| anyhow::anyhow!("cannot configure {device:?} for {dtype:?}: {e:?}"))?;
    Ok(device)
}

fn cpu() -> Result<Device> {
    if cfg!(feature = "flex") {
        Ok(Device::flex())
    } else {
        bail!("the CPU backend is not compiled in: build with `--features flex`")
    }
}

#[cfg(feature = "wgpu")]
fn wgpu() -> Result<Device> {
    Ok(Device::wgpu(
        agentcpt_model::burn::tensor::DeviceKind::DefaultDevice,
    ))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu() -> Result<Device> {
    bail!("the wgpu backend is not compiled in: build with `--features wgpu`")
}

#[cfg(feature = "cuda")]
fn cuda(index: usize) -> Result<Device> {
    Ok(Device::cuda(index))
}

#[cfg(not(feature = "cuda"))]
fn cuda(_index: usize) -> Result<Device> {
    bail!("the CUDA backend is not compiled in: build with `--features cuda`")
}
