//! Graph-level checks: single definition of every value, inputs that exist, a topological node
//! order without cycles, and operators the model builder supports.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::ir::{OnnxGraph, OnnxNode};
use super::{SUPPORTED_OPS, is_default_domain};
use crate::error::{LayersError, Result};

/// What defines a value name.
#[derive(Clone, Copy)]
enum Definition {
    GraphInput,
    Initializer,
    Node(usize),
}

impl Definition {
    fn describe(self, nodes: &[OnnxNode]) -> String {
        match self {
            Self::GraphInput => "a graph input".to_owned(),
            Self::Initializer => "an initializer".to_owned(),
            Self::Node(index) => match nodes.get(index) {
                Some(node) => format!("node `{}`", node.name),
                None => format!("node #{index}"),
            },
        }
    }
}

/// Checks that every value is defined once and every node input and graph output is defined,
/// then reorders `graph.nodes` topologically (stable: an already sorted file keeps its order).
pub(crate) fn sort_and_check_values(graph: &mut OnnxGraph) -> Result<()> {
    let source_name = graph.source_name.clone();
    let source_name = source_name.as_str();
    let nodes = &graph.nodes;
    let mut definitions: HashMap<&str, Definition> = HashMap::new();
    let duplicate =
        |name: &str, first: Definition, second: Definition| LayersError::DuplicateValue {
            source_name: source_name.to_owned(),
            name: name.to_owned(),
            first: first.describe(nodes),
            second: second.describe(nodes),
        };
    // Graph inputs that are also initializers were already dropped from `graph.inputs`.
    for name in graph.initializers.keys() {
        definitions.insert(name, Definition::Initializer);
    }
    for input in &graph.inputs {
        if let Some(&first) = definitions.get(input.name.as_str()) {
            return Err(duplicate(&input.name, first, Definition::GraphInput));
        }
        definitions.insert(&input.name, Definition::GraphInput);
    }
    for (index, node) in nodes.iter().enumerate() {
        for output in node.outputs.iter().filter(|output| !output.is_empty()) {
            if let Some(&first) = definitions.get(output.as_str()) {
                return Err(duplicate(output, first, Definition::Node(index)));
            }
            definitions.insert(output, Definition::Node(index));
        }
    }

    // Edges producer -> consumer, one per input occurrence, so counts stay consistent.
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    let mut pending_inputs = vec![0usize; nodes.len()];
    for (index, node) in nodes.iter().enumerate() {
        for input in node.inputs.iter().filter(|input| !input.is_empty()) {
            match definitions.get(input.as_str()) {
                None => {
                    return Err(LayersError::MissingInput {
                        source_name: source_name.to_owned(),
                        node: node.name.clone(),
                        input: input.clone(),
                    });
                }
                Some(&Definition::Node(producer)) => {
                    // Both are indices of `nodes`, the length of both vectors.
                    if let Some(list) = consumers.get_mut(producer) {
                        list.push(index);
                    }
                    if let Some(pending) = pending_inputs.get_mut(index) {
                        *pending += 1;
                    }
                }
                Some(_) => {}
            }
        }
    }
    if let Some(output) = graph
        .outputs
        .iter()
        .find(|output| !definitions.contains_key(output.as_str()))
    {
        return Err(LayersError::MissingOutput {
            source_name: source_name.to_owned(),
            output: output.clone(),
        });
    }

    // Kahn's algorithm, always taking the ready node that comes first in the file.
    let mut ready: BinaryHeap<Reverse<usize>> = pending_inputs
        .iter()
        .enumerate()
        .filter(|&(_, &pending)| pending == 0)
        .map(|(index, _)| Reverse(index))
        .collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(Reverse(index)) = ready.pop() {
        order.push(index);
        for &consumer in consumers.get(index).into_iter().flatten() {
            if let Some(pending) = pending_inputs.get_mut(consumer) {
                *pending -= 1;
                if *pending == 0 {
                    ready.push(Reverse(consumer));
                }
            }
        }
    }
    if order.len() < nodes.len() {
        let node = node_on_cycle(nodes, &definitions, &pending_inputs);
        return Err(LayersError::Cycle {
            source_name: source_name.to_owned(),
            node: nodes.get(node).map_or_else(String::new, |n| n.name.clone()),
        });
    }

    let mut slots: Vec<Option<OnnxNode>> = std::mem::take(&mut graph.nodes)
        .into_iter()
        .map(Some)
        .collect();
    graph.nodes = order
        .into_iter()
        .filter_map(|index| slots.get_mut(index).and_then(Option::take))
        .collect();
    Ok(())
}

/// A node that lies on a cycle, given the nodes Kahn's algorithm could not emit (those with
/// `pending_inputs > 0`). Each of them has an unemitted producer, so walking from one producer to
/// the next must revisit a node, and the first revisited node is on a cycle.
fn node_on_cycle(
    nodes: &[OnnxNode],
    definitions: &HashMap<&str, Definition>,
    pending_inputs: &[usize],
) -> usize {
    let blocked = |index: usize| pending_inputs.get(index).is_some_and(|&n| n > 0);
    let blocked_producer =
        |index: usize| {
            nodes.get(index)?.inputs.iter().find_map(|input| {
                match definitions.get(input.as_str()) {
                    Some(&Definition::Node(producer)) if blocked(producer) => Some(producer),
                    _ => None,
                }
            })
        };
    let Some(mut current) = (0..nodes.len()).find(|&index| blocked(index)) else {
        return 0;
    };
    let mut visited = vec![false; nodes.len()];
    while let Some(seen) = visited.get_mut(current)
        && !*seen
    {
        *seen = true;
        match blocked_producer(current) {
            Some(producer) => current = producer,
            None => break,
        }
    }
    current
}

/// Checks that every node is an operator the model builder implements (see [`SUPPORTED_OPS`]),
/// in the default domain. [`read_onnx`](super::read_onnx) already calls it; a builder may call it
/// again on a graph it received from elsewhere.
pub fn check_supported(graph: &OnnxGraph) -> Result<()> {
    let unsupported = graph.nodes.iter().find(|node| {
        !is_default_domain(&node.domain) || !SUPPORTED_OPS.contains(&node.op_type.as_str())
    });
    match unsupported {
        None => Ok(()),
        Some(node) => Err(LayersError::UnsupportedOp {
            source_name: graph.source_name.clone(),
            op_type: if is_default_domain(&node.domain) {
                node.op_type.clone()
            } else {
                format!("{}.{}", node.domain, node.op_type)
            },
            node: node.name.clone(),
            opset: graph.opset,
            supported: SUPPORTED_OPS,
        }),
    }
}
