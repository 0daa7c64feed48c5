//! Examples and integration tests of the messaging workspace live beside this empty library.
