//! Cloud boot: which platform the node runs on, what its metadata service
//! says, and what the node does with the answer.

pub mod metadata;
