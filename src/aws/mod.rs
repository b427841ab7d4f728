//! The AWS side: building clients, and classifying what they answer.

pub mod client;
pub mod error;
