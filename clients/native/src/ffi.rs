//! The C ABI (wip).
