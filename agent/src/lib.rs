pub mod placeholder {}
pub mod inference;
