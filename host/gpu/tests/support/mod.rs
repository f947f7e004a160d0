//! Small ONNX graphs built in code, for the executor's tests.
#![allow(dead_code)]

use flumen_gpu::onnx::{
    AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto,
    TypeProto, TypeTensor, ValueInfoProto, data_type,
};

/// A float32 or int64 value with free (`-1`) or fixed dimensions.
pub fn value(name: &str, elem: i32, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| {
            if *d < 0 {
                Dimension { dim_value: None, dim_param: Some("n".into()) }
            } else {
                Dimension { dim_value: Some(*d), dim_param: None }
            }
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeTensor { elem_type: elem, shape: Some(TensorShapeProto { dim }) }),
        }),
    }
}

pub fn f32_init(name: &str, dims: &[i64], values: Vec<f32>) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: data_type::FLOAT,
        float_data: values,
        ..Default::default()
    }
}

pub fn i64_init(name: &str, dims: &[i64], values: Vec<i64>) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: data_type::INT64,
        int64_data: values,
        ..Default::default()
    }
}

pub enum A {
    I(i64),
    F(f32),
    Is(Vec<i64>),
}

pub fn node(op: &str, inputs: &[&str], output: &str, attrs: Vec<(&str, A)>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: format!("{op}_{output}"),
        op_type: op.into(),
        attribute: attrs
            .into_iter()
            .map(|(name, a)| {
                let mut p = AttributeProto { name: name.into(), ..Default::default() };
                match a {
                    A::I(i) => (p.i, p.r#type) = (i, 2),
                    A::F(f) => (p.f, p.r#type) = (f, 1),
                    A::Is(v) => (p.ints, p.r#type) = (v, 7),
                }
                p
            })
            .collect(),
        domain: String::new(),
    }
}

pub fn model(
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    inits: Vec<TensorProto>,
) -> Vec<u8> {
    ModelProto {
        ir_version: 8,
        producer_name: "flumen-gpu-tests".into(),
        graph: Some(GraphProto { node: nodes, name: "t".into(), initializer: inits, input: inputs, output: outputs }),
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
    }
    .to_bytes()
}

/// Deterministic pseudo-random values in [-1, 1).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}
