//! An ONNX model as the GPU executor runs it: decoded, every node checked
//! against what the executor supports (an unsupported operator or attribute
//! is an error naming the node, never a wrong answer later), constants kept
//! on the host, and BatchNormalization folded into the convolution before it.

use std::collections::HashMap;

use flumen_types::inference::{DType, TensorSpec};
use prost::Message as _;

use crate::onnx::{self, data_type};

/// Operators the executor runs, with what it supports of each. The table is
/// printed in errors and checked against the benchmark models in tests.
pub const OPS: &[(&str, &str)] = &[
    ("Add", "float32 with broadcasting; int64 shape arithmetic on the host"),
    ("BatchNormalization", "inference form; folded into the Conv before it"),
    ("Cast", "int64 → float32; any cast of host constants"),
    ("Concat", "host values (shapes)"),
    ("Constant", "value"),
    ("Conv", "2-D, group 1, explicit pads (im2col + cuBLAS GEMM)"),
    ("Div", "as Add"),
    ("Erf", "float32"),
    ("Exp", "float32"),
    ("Flatten", "any axis"),
    ("Gather", "rows of a float32 table (axis 0); host values on any axis"),
    ("Gemm", "2-D, any transA/transB/alpha/beta, bias broadcast"),
    ("GlobalAveragePool", "4-D"),
    ("Identity", ""),
    ("LayerNormalization", "last axis"),
    ("MatMul", "float32, 2-D weights or equal batch dimensions (cuBLAS)"),
    ("MaxPool", "2-D, no ceil_mode"),
    ("Mul", "as Add"),
    ("Neg", "float32"),
    ("Pow", "float32"),
    ("Range", "host values"),
    ("Reciprocal", "float32"),
    ("Relu", "float32"),
    ("Reshape", "any (no copy)"),
    ("Shape", "any"),
    ("Sigmoid", "float32"),
    ("Softmax", "last axis"),
    ("Sqrt", "float32"),
    ("Squeeze", "attribute or input axes"),
    ("Sub", "as Add"),
    ("Tanh", "float32"),
    ("Transpose", "float32, up to 6 dimensions"),
    ("Unsqueeze", "attribute or input axes"),
];

/// Values the host computes (shapes, indices, constants).
#[derive(Debug, Clone, PartialEq)]
pub enum HostData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// A tensor held on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: HostData,
}

impl HostTensor {
    pub fn i64(shape: Vec<usize>, v: Vec<i64>) -> HostTensor {
        HostTensor { shape, data: HostData::I64(v) }
    }

    pub fn f32(shape: Vec<usize>, v: Vec<f32>) -> HostTensor {
        HostTensor { shape, data: HostData::F32(v) }
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as int64 (floats truncated), for shapes and axes.
    pub fn as_i64(&self) -> Vec<i64> {
        match &self.data {
            HostData::I64(v) => v.clone(),
            HostData::F32(v) => v.iter().map(|x| *x as i64).collect(),
        }
    }

    pub fn as_f32(&self) -> Vec<f32> {
        match &self.data {
            HostData::F32(v) => v.clone(),
            HostData::I64(v) => v.iter().map(|x| *x as f32).collect(),
        }
    }
}

/// Element-wise operators with two inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add = 0,
    Sub = 1,
    Mul = 2,
    Div = 3,
    Pow = 4,
}

/// Element-wise operators with one input (codes as in `unary_f32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnOp {
    Relu = 0,
    Erf = 1,
    Sigmoid = 2,
    Tanh = 3,
    Sqrt = 4,
    Exp = 5,
    Neg = 6,
    Reciprocal = 7,
}

/// 2-D window geometry (Conv, MaxPool).
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    /// Top, left, bottom, right.
    pub pads: [usize; 4],
    pub dilations: [usize; 2],
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Binary(BinOp),
    Unary(UnOp),
    /// `alpha · (a × b) + bias`: a Mul by a constant and an Add of a bias
    /// row that follow a MatMul are folded into it at load.
    /// `trans_b`: b holds the right operand transposed (its last two
    /// dimensions swapped), so a Transpose before it moved less.
    MatMul {
        alpha: f32,
        bias: bool,
        trans_b: bool,
    },
    Gemm {
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
    },
    Softmax {
        axis: i64,
    },
    LayerNorm {
        axis: i64,
        eps: f32,
    },
    Gather {
        axis: i64,
    },
    Cast {
        to: i32,
    },
    Transpose {
        perm: Option<Vec<i64>>,
    },
    Reshape {
        allowzero: bool,
    },
    Unsqueeze {
        axes: Option<Vec<i64>>,
    },
    Squeeze {
        axes: Option<Vec<i64>>,
    },
    Flatten {
        axis: i64,
    },
    Identity,
    /// `inputs`: x, weights, bias (a zero bias is added when the model has none).
    Conv {
        window: Window,
        relu: bool,
    },
    /// BatchNormalization as read; `Graph::parse` turns every one into a
    /// folded Conv or a `ChannelAffine`.
    BatchNorm {
        eps: f32,
    },
    /// An unfolded BatchNormalization: `inputs` x, scale, shift (per channel).
    ChannelAffine,
    MaxPool {
        window: Window,
    },
    GlobalAveragePool,
    Shape {
        start: i64,
        end: Option<i64>,
    },
    Range,
    Concat {
        axis: i64,
    },
    Constant(HostTensor),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub op_type: String,
    pub op: Op,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Graph {
    pub name: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub initializers: HashMap<String, HostTensor>,
    pub nodes: Vec<Node>,
}

fn dtype_of(code: i32) -> Option<DType> {
    match code {
        data_type::FLOAT => Some(DType::F32),
        data_type::INT64 => Some(DType::I64),
        data_type::INT32 => Some(DType::I32),
        _ => None,
    }
}

fn spec(v: &onnx::ValueInfoProto) -> Result<TensorSpec, String> {
    let t = v
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .ok_or_else(|| format!("`{}` is not a tensor", v.name))?;
    let dtype = dtype_of(t.elem_type).ok_or_else(|| {
        format!("`{}` has element type {} (the GPU executor takes float32 and int64)", v.name, t.elem_type)
    })?;
    let shape = t
        .shape
        .as_ref()
        .map(|s| s.dim.iter().map(|d| d.dim_value.filter(|v| *v > 0).unwrap_or(-1)).collect())
        .unwrap_or_default();
    Ok(TensorSpec { name: v.name.clone(), dtype, shape })
}

/// A tensor's values; `what` names it in errors.
pub fn host_tensor(t: &onnx::TensorProto, what: &str) -> Result<HostTensor, String> {
    if t.data_location == 1 {
        return Err(format!("{what}: data in an external file is not supported; save the model with its data inside"));
    }
    let shape: Vec<usize> = t
        .dims
        .iter()
        .map(|d| usize::try_from(*d).map_err(|_| format!("{what}: negative dimension {d}")))
        .collect::<Result<_, _>>()?;
    let n = shape.iter().try_fold(1usize, |a, d| a.checked_mul(*d)).ok_or_else(|| format!("{what}: too large"))?;
    let raw = |size: usize| -> Result<&[u8], String> {
        if t.raw_data.len() != n * size {
            return Err(format!("{what}: {} bytes of data for {n} values", t.raw_data.len()));
        }
        Ok(&t.raw_data)
    };
    let data = match t.data_type {
        data_type::FLOAT if !t.raw_data.is_empty() => {
            HostData::F32(raw(4)?.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
        }
        data_type::FLOAT => HostData::F32(t.float_data.clone()),
        data_type::INT64 if !t.raw_data.is_empty() => HostData::I64(
            raw(8)?
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
        ),
        data_type::INT64 => HostData::I64(t.int64_data.clone()),
        data_type::INT32 if !t.raw_data.is_empty() => HostData::I64(
            raw(4)?.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64).collect(),
        ),
        data_type::INT32 => HostData::I64(t.int32_data.iter().map(|v| *v as i64).collect()),
        other => return Err(format!("{what}: element type {other} is not supported (float32, int32, int64)")),
    };
    let len = match &data {
        HostData::F32(v) => v.len(),
        HostData::I64(v) => v.len(),
    };
    if len != n {
        return Err(format!("{what}: {len} values for shape {shape:?}"));
    }
    Ok(HostTensor { shape, data })
}

/// A node's attributes by name.
struct Attrs<'a> {
    node: &'a onnx::NodeProto,
}

impl Attrs<'_> {
    fn get(&self, name: &str) -> Option<&onnx::AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }
    fn int(&self, name: &str, default: i64) -> i64 {
        self.get(name).map_or(default, |a| a.i)
    }
    fn float(&self, name: &str, default: f32) -> f32 {
        self.get(name).map_or(default, |a| a.f)
    }
    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.get(name).map(|a| a.ints.clone())
    }
    fn string(&self, name: &str) -> Option<String> {
        self.get(name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }
}

fn pair(v: Option<Vec<i64>>, default: usize, what: &str) -> Result<[usize; 2], String> {
    match v.as_deref() {
        None => Ok([default, default]),
        Some([a, b]) if *a > 0 && *b > 0 => Ok([*a as usize, *b as usize]),
        Some(other) => Err(format!("{what} = {other:?} (two positive values: 2-D only)")),
    }
}

fn window(a: &Attrs<'_>, kernel: Option<[usize; 2]>) -> Result<Window, String> {
    if let Some(p) = a.string("auto_pad").filter(|p| p != "NOTSET") {
        return Err(format!("auto_pad = {p} is not supported (explicit pads only)"));
    }
    let kernel = match kernel {
        Some(k) => k,
        None => pair(a.ints("kernel_shape"), 0, "kernel_shape")?,
    };
    let pads = match a.ints("pads").as_deref() {
        None => [0; 4],
        Some([t, l, b, r]) if [t, l, b, r].iter().all(|p| **p >= 0) => {
            [*t as usize, *l as usize, *b as usize, *r as usize]
        }
        Some(other) => Err(format!("pads = {other:?} (four values: 2-D only)"))?,
    };
    Ok(Window {
        kernel,
        strides: pair(a.ints("strides"), 1, "strides")?,
        pads,
        dilations: pair(a.ints("dilations"), 1, "dilations")?,
    })
}

/// The operator of one node, checked; the error says what is unsupported.
fn op_of(n: &onnx::NodeProto, inits: &HashMap<String, HostTensor>) -> Result<Op, String> {
    if !(n.domain.is_empty() || n.domain == "ai.onnx") {
        return Err(format!("operator domain `{}` is not supported", n.domain));
    }
    let a = Attrs { node: n };
    let op = match n.op_type.as_str() {
        "Add" => Op::Binary(BinOp::Add),
        "Sub" => Op::Binary(BinOp::Sub),
        "Mul" => Op::Binary(BinOp::Mul),
        "Div" => Op::Binary(BinOp::Div),
        "Pow" => Op::Binary(BinOp::Pow),
        "Relu" => Op::Unary(UnOp::Relu),
        "Erf" => Op::Unary(UnOp::Erf),
        "Sigmoid" => Op::Unary(UnOp::Sigmoid),
        "Tanh" => Op::Unary(UnOp::Tanh),
        "Sqrt" => Op::Unary(UnOp::Sqrt),
        "Exp" => Op::Unary(UnOp::Exp),
        "Neg" => Op::Unary(UnOp::Neg),
        "Reciprocal" => Op::Unary(UnOp::Reciprocal),
        "MatMul" => Op::MatMul { alpha: 1.0, bias: false, trans_b: false },
        "Gemm" => Op::Gemm {
            alpha: a.float("alpha", 1.0),
            beta: a.float("beta", 1.0),
            trans_a: a.int("transA", 0) != 0,
            trans_b: a.int("transB", 0) != 0,
        },
        "Softmax" => Op::Softmax { axis: a.int("axis", -1) },
        "LayerNormalization" => {
            if a.int("stash_type", 1) != 1 {
                return Err("stash_type other than float32 is not supported".into());
            }
            if n.output.iter().skip(1).any(|o| !o.is_empty()) {
                return Err("only the first output (Y) is supported".into());
            }
            Op::LayerNorm { axis: a.int("axis", -1), eps: a.float("epsilon", 1e-5) }
        }
        "Gather" => Op::Gather { axis: a.int("axis", 0) },
        "Cast" => Op::Cast { to: a.int("to", 0) as i32 },
        "Transpose" => Op::Transpose { perm: a.ints("perm") },
        "Reshape" => Op::Reshape { allowzero: a.int("allowzero", 0) != 0 },
        "Unsqueeze" => Op::Unsqueeze { axes: a.ints("axes") },
        "Squeeze" => Op::Squeeze { axes: a.ints("axes") },
        "Flatten" => Op::Flatten { axis: a.int("axis", 1) },
        "Identity" => Op::Identity,
        "Conv" => {
            if a.int("group", 1) != 1 {
                return Err(format!("group = {} is not supported (group 1 only)", a.int("group", 1)));
            }
            let w = n.input.get(1).and_then(|w| inits.get(w)).ok_or("the weights must be an initializer")?;
            if w.shape.len() != 4 {
                return Err(format!("weights of shape {:?}: 2-D convolutions only", w.shape));
            }
            Op::Conv { window: window(&a, Some([w.shape[2], w.shape[3]]))?, relu: false }
        }
        "BatchNormalization" => {
            if n.output.iter().skip(1).any(|o| !o.is_empty()) {
                return Err("training outputs are not supported (inference form only)".into());
            }
            Op::BatchNorm { eps: a.float("epsilon", 1e-5) }
        }
        "MaxPool" => {
            if a.int("ceil_mode", 0) != 0 || a.int("storage_order", 0) != 0 {
                return Err("ceil_mode and storage_order are not supported".into());
            }
            if n.output.len() > 1 && !n.output[1].is_empty() {
                return Err("the Indices output is not supported".into());
            }
            Op::MaxPool { window: window(&a, None)? }
        }
        "GlobalAveragePool" => Op::GlobalAveragePool,
        "Shape" => Op::Shape { start: a.int("start", 0), end: a.get("end").map(|e| e.i) },
        "Range" => Op::Range,
        "Concat" => Op::Concat { axis: a.int("axis", 0) },
        "Constant" => {
            let t = a.get("value").and_then(|v| v.t.as_ref()).ok_or("only the `value` form is supported")?;
            Op::Constant(host_tensor(t, "value")?)
        }
        other => {
            let known: Vec<&str> = OPS.iter().map(|(o, _)| *o).collect();
            return Err(format!(
                "operator {other} is not supported by the GPU executor (it runs: {})",
                known.join(", ")
            ));
        }
    };
    Ok(op)
}

impl Graph {
    /// Decodes and checks a model file's bytes. Errors name the node and
    /// operator that cannot run.
    pub fn parse(bytes: &[u8]) -> Result<Graph, String> {
        let model = onnx::ModelProto::decode(bytes).map_err(|e| format!("not an ONNX model: {e}"))?;
        let g = model.graph.ok_or("the model has no graph")?;
        let mut initializers = HashMap::new();
        for t in &g.initializer {
            initializers.insert(t.name.clone(), host_tensor(t, &format!("initializer `{}`", t.name))?);
        }
        let inputs =
            g.input.iter().filter(|i| !initializers.contains_key(&i.name)).map(spec).collect::<Result<Vec<_>, _>>()?;
        if let Some(i) = inputs.iter().find(|i| !matches!(i.dtype, DType::F32 | DType::I64)) {
            return Err(format!("input `{}` is {} (the GPU executor takes float32 and int64 inputs)", i.name, i.dtype));
        }
        let outputs = g.output.iter().map(spec).collect::<Result<Vec<_>, _>>()?;
        let mut nodes = Vec::with_capacity(g.node.len());
        for (i, n) in g.node.iter().enumerate() {
            let name = if n.name.is_empty() { format!("#{i}") } else { n.name.clone() };
            if n.output.first().is_none_or(String::is_empty) {
                return Err(format!("node `{name}` ({}) has no output", n.op_type));
            }
            let op = op_of(n, &initializers).map_err(|why| format!("node `{name}` ({}): {why}", n.op_type))?;
            nodes.push(Node {
                name,
                op_type: n.op_type.clone(),
                op,
                inputs: n.input.clone(),
                outputs: n.output.iter().take(1).cloned().collect(),
            });
        }
        let mut graph = Graph { name: g.name, inputs, outputs, initializers, nodes };
        graph.prepare_batch_norms()?;
        graph.fuse_relu();
        graph.fuse_matmul_epilogues();
        graph.fuse_transposed_operands();
        graph.give_convs_a_bias();
        Ok(graph)
    }

    /// How many nodes consume `value` (graph outputs count as one).
    fn uses(&self, value: &str) -> usize {
        self.nodes.iter().flat_map(|n| &n.inputs).filter(|i| *i == value).count()
            + self.outputs.iter().filter(|o| o.name == value).count()
    }

    /// BatchNormalization → per-channel scale and shift, folded into the
    /// weights and bias of a Conv whose only consumer it is; otherwise a
    /// `ChannelAffine` node over the computed scale and shift.
    fn prepare_batch_norms(&mut self) -> Result<(), String> {
        let mut i = 0;
        while i < self.nodes.len() {
            let Op::BatchNorm { eps } = self.nodes[i].op else {
                i += 1;
                continue;
            };
            let node = self.nodes[i].clone();
            let fail = |why: &str| format!("node `{}` (BatchNormalization): {why}", node.name);
            let param = |k: usize| -> Result<Vec<f32>, String> {
                node.inputs
                    .get(k)
                    .and_then(|n| self.initializers.get(n))
                    .map(HostTensor::as_f32)
                    .ok_or_else(|| fail("scale, B, mean and var must be initializers"))
            };
            let (gamma, beta, mean, var) = (param(1)?, param(2)?, param(3)?, param(4)?);
            let c = gamma.len();
            if [beta.len(), mean.len(), var.len()] != [c, c, c] {
                return Err(fail("scale, B, mean and var differ in length"));
            }
            let scale: Vec<f32> = (0..c).map(|k| gamma[k] / (var[k] + eps).sqrt()).collect();
            let shift: Vec<f32> = (0..c).map(|k| beta[k] - mean[k] * scale[k]).collect();
            let x = node.inputs[0].clone();
            let producer =
                self.nodes.iter().position(|n| n.outputs.first() == Some(&x) && matches!(n.op, Op::Conv { .. }));
            if let Some(p) = producer.filter(|_| self.uses(&x) == 1) {
                self.fold_into_conv(p, &scale, &shift, &node.outputs[0])?;
                self.nodes.remove(i);
                continue;
            }
            let (s, t) = (format!("{}::scale", node.name), format!("{}::shift", node.name));
            self.initializers.insert(s.clone(), HostTensor::f32(vec![c], scale));
            self.initializers.insert(t.clone(), HostTensor::f32(vec![c], shift));
            self.nodes[i].inputs = vec![x, s, t];
            self.nodes[i].op = Op::ChannelAffine;
            i += 1;
        }
        Ok(())
    }

    fn fold_into_conv(&mut self, conv: usize, scale: &[f32], shift: &[f32], output: &str) -> Result<(), String> {
        let node = &self.nodes[conv];
        let w_name = node.inputs[1].clone();
        let w = self.initializers.get(&w_name).ok_or("conv weights vanished")?.clone();
        let oc = w.shape[0];
        if oc != scale.len() {
            return Err(format!(
                "node `{}` (Conv): {oc} output channels, but the BatchNormalization after it has {}",
                node.name,
                scale.len()
            ));
        }
        let per = w.len() / oc.max(1);
        let mut wv = w.as_f32();
        for (o, chunk) in wv.chunks_mut(per).enumerate() {
            chunk.iter_mut().for_each(|v| *v *= scale[o]);
        }
        let bias: Vec<f32> = match node.inputs.get(2).filter(|b| !b.is_empty()).and_then(|b| self.initializers.get(b)) {
            Some(b) => b.as_f32().iter().zip(scale).zip(shift).map(|((b, s), t)| b * s + t).collect(),
            None => shift.to_vec(),
        };
        let (wn, bn) = (format!("{}::folded_w", node.name), format!("{}::folded_b", node.name));
        self.initializers.insert(wn.clone(), HostTensor::f32(w.shape.clone(), wv));
        self.initializers.insert(bn.clone(), HostTensor::f32(vec![oc], bias));
        let node = &mut self.nodes[conv];
        node.inputs = vec![node.inputs[0].clone(), wn, bn];
        node.outputs = vec![output.to_owned()];
        Ok(())
    }

    /// A Relu whose input is a Conv's only use runs inside the Conv's output kernel.
    fn fuse_relu(&mut self) {
        let mut i = 0;
        while i < self.nodes.len() {
            let is_relu = self.nodes[i].op == Op::Unary(UnOp::Relu);
            let x = self.nodes[i].inputs.first().cloned().unwrap_or_default();
            let producer = self.nodes[..i]
                .iter()
                .position(|n| n.outputs.first() == Some(&x) && matches!(n.op, Op::Conv { relu: false, .. }));
            if let (true, Some(p)) = (is_relu && self.uses(&x) == 1, producer) {
                let out = self.nodes[i].outputs[0].clone();
                if let Op::Conv { relu, .. } = &mut self.nodes[p].op {
                    *relu = true;
                }
                self.nodes[p].outputs = vec![out];
                self.nodes.remove(i);
                continue;
            }
            i += 1;
        }
    }

    /// MatMul → Mul by a constant scalar → Add of a constant row: the scale
    /// becomes the GEMM's alpha and the row is added in place after it.
    fn fuse_matmul_epilogues(&mut self) {
        let mut i = 0;
        while i < self.nodes.len() {
            let Op::MatMul { alpha, bias, trans_b } = self.nodes[i].op else {
                i += 1;
                continue;
            };
            let out = self.nodes[i].outputs[0].clone();
            let consumer = self.nodes.iter().position(|n| n.inputs.contains(&out));
            let Some(j) = consumer.filter(|_| self.uses(&out) == 1) else {
                i += 1;
                continue;
            };
            let c = &self.nodes[j];
            let other = c.inputs.iter().find(|x| **x != out).cloned().unwrap_or_default();
            let constant = self.initializers.get(&other).filter(|t| matches!(t.data, HostData::F32(_)));
            let fused = match (&c.op, constant) {
                (Op::Binary(BinOp::Mul), Some(t)) if t.len() == 1 && !bias && c.inputs.len() == 2 => {
                    Some(Op::MatMul { alpha: alpha * t.as_f32()[0], bias, trans_b })
                }
                (Op::Binary(BinOp::Add), Some(t)) if t.shape.len() == 1 && !bias && c.inputs.len() == 2 => {
                    Some(Op::MatMul { alpha, bias: true, trans_b })
                }
                _ => None,
            };
            let Some(op) = fused else {
                i += 1;
                continue;
            };
            let new_out = self.nodes[j].outputs[0].clone();
            if op == (Op::MatMul { alpha, bias: true, trans_b }) {
                self.nodes[i].inputs.push(other);
            }
            self.nodes[i].op = op;
            self.nodes[i].outputs = vec![new_out];
            self.nodes.remove(j);
        }
    }

    /// A Transpose feeding a MatMul's right operand that moves the
    /// innermost axis (attention's `k` → `kᵀ`: a scattered copy) keeps it
    /// in place instead, and the GEMM reads the operand transposed.
    fn fuse_transposed_operands(&mut self) {
        for i in 0..self.nodes.len() {
            let Op::MatMul { alpha, bias, trans_b: false } = self.nodes[i].op else { continue };
            let Some(b) = self.nodes[i].inputs.get(1).cloned() else { continue };
            let Some(t) = self.nodes.iter().position(|n| n.outputs.first() == Some(&b)) else { continue };
            let Op::Transpose { perm: Some(perm) } = &self.nodes[t].op else { continue };
            let rank = perm.len();
            if rank < 2 || perm[rank - 2] != rank as i64 - 1 || self.uses(&b) != 1 {
                continue;
            }
            let mut swapped = perm.clone();
            swapped.swap(rank - 2, rank - 1);
            let identity = swapped.iter().enumerate().all(|(k, p)| *p == k as i64);
            self.nodes[t].op = if identity { Op::Identity } else { Op::Transpose { perm: Some(swapped) } };
            self.nodes[i].op = Op::MatMul { alpha, bias, trans_b: true };
        }
    }

    fn give_convs_a_bias(&mut self) {
        for k in 0..self.nodes.len() {
            if !matches!(self.nodes[k].op, Op::Conv { .. })
                || self.nodes[k].inputs.get(2).is_some_and(|b| !b.is_empty())
            {
                continue;
            }
            let oc = self.initializers.get(&self.nodes[k].inputs[1]).map_or(0, |w| w.shape[0]);
            let name = format!("{}::zero_bias", self.nodes[k].name);
            self.initializers.insert(name.clone(), HostTensor::f32(vec![oc], vec![0.0; oc]));
            self.nodes[k].inputs.truncate(2);
            self.nodes[k].inputs.push(name);
        }
    }

    /// The operators this graph uses, each once, in first-use order.
    pub fn op_types(&self) -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        for n in &self.nodes {
            if !seen.contains(&n.op_type) {
                seen.push(n.op_type.clone());
            }
        }
        seen
    }

    /// Bytes of float32 weights (what the device holds for the model).
    pub fn weight_bytes(&self) -> usize {
        self.initializers.values().filter(|t| matches!(t.data, HostData::F32(_))).map(|t| t.len() * 4).sum()
    }
}
