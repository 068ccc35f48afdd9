pub mod faults;
pub mod moto;
