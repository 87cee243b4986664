//! The events adapter of bus-integration-docker: the domain's event ports
//! over the Bus Events API, and in memory for tests.
//!
//! Wire DTOs live here, not in the domain: [`codec`] decodes request
//! payloads into domain requests (naming the field that fails) and encodes
//! domain responses into the contract's payloads within the 4 MiB limit.
//!
//! Layout:
//! * [`codec`]: payload DTOs, `decode` and `encode`.
//! * [`http`]: `HttpSource` / `HttpPublisher` on `bus-events-client`.
//! * [`memory`]: `MemoryBus` / `MemorySource` / `MemoryPublisher` for tests.
//!
//! Must not depend on any Docker library.

pub mod codec;
pub mod http;
pub mod memory;
