//! The MNIST auxiliary-logit experiment: data, model and stages.

pub mod idx;
pub mod model;
pub mod stages;
