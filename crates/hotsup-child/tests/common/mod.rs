//! Helpers shared by the tests (and the activation probe).

pub mod activation;
