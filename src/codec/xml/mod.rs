//! XML handling shared by every XML codec: a bounded, entity-free parser.

pub mod c14n;
pub mod dom;
pub mod dsig;

pub use dom::{Element, Limits, XmlError};
