//! One module per protocol flow, so the spec's chapters can be found in the tree.

pub(crate) mod admin;
mod connect;
mod disconnect;
mod publish;
pub(crate) mod refuse;
mod subscribe;
