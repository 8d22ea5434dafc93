//! The semantics of host (scalar) operations, shared by constant folding and the interpreter so
//! that folding never changes a result.
//!
//! Integers are 64-bit with wrapping arithmetic; `%` by zero has no value (an error at run time,
//! never folded). Float-to-int conversions saturate (NaN becomes 0). Mixed int/float operands
//! never reach here: lowering converts them.

use crate::ir::{BinaryOp, Constant, UnaryOp};

/// The value of a unary host operation, or `None` when it has none.
pub fn unary(op: UnaryOp, a: Constant) -> Option<Constant> {
    Some(match (op, a) {
        (UnaryOp::Not, Constant::Bool(b)) => Constant::Bool(!b),
        (UnaryOp::Neg, Constant::I64(v)) => Constant::I64(v.wrapping_neg()),
        (UnaryOp::ToFloat, Constant::I64(v)) => Constant::F64(v as f64),
        (UnaryOp::Truncate, Constant::F64(v)) => Constant::I64(v as i64),
        (UnaryOp::Round, Constant::F64(v)) => Constant::I64(v.round() as i64),
        (op, Constant::F64(x)) => Constant::F64(match op {
            UnaryOp::Neg => -x,
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
            UnaryOp::Expm1 => x.exp_m1(),
            UnaryOp::Log1p => x.ln_1p(),
            UnaryOp::Sin => x.sin(),
            UnaryOp::Cos => x.cos(),
            UnaryOp::Tan => x.tan(),
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Atan => x.atan(),
            UnaryOp::Abs => x.abs(),
            UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            UnaryOp::Floor => x.floor(),
            UnaryOp::Ceil => x.ceil(),
            UnaryOp::Not | UnaryOp::ToFloat | UnaryOp::Truncate | UnaryOp::Round => return None,
        }),
        _ => return None,
    })
}

/// The value of a binary host operation, or `None` when it has none.
pub fn binary(op: BinaryOp, a: Constant, b: Constant) -> Option<Constant> {
    Some(match (a, b) {
        (Constant::I64(x), Constant::I64(y)) => match op {
            BinaryOp::Add => Constant::I64(x.wrapping_add(y)),
            BinaryOp::Sub => Constant::I64(x.wrapping_sub(y)),
            BinaryOp::Mul => Constant::I64(x.wrapping_mul(y)),
            BinaryOp::Rem => Constant::I64(x.checked_rem(y)?),
            BinaryOp::Min => Constant::I64(x.min(y)),
            BinaryOp::Max => Constant::I64(x.max(y)),
            BinaryOp::Eq => Constant::Bool(x == y),
            BinaryOp::Ne => Constant::Bool(x != y),
            BinaryOp::Lt => Constant::Bool(x < y),
            BinaryOp::Le => Constant::Bool(x <= y),
            BinaryOp::Gt => Constant::Bool(x > y),
            BinaryOp::Ge => Constant::Bool(x >= y),
            BinaryOp::Div | BinaryOp::Pow | BinaryOp::And | BinaryOp::Or => return None,
        },
        (Constant::F64(x), Constant::F64(y)) => match op {
            BinaryOp::Add => Constant::F64(x + y),
            BinaryOp::Sub => Constant::F64(x - y),
            BinaryOp::Mul => Constant::F64(x * y),
            BinaryOp::Div => Constant::F64(x / y),
            BinaryOp::Rem => Constant::F64(x % y),
            BinaryOp::Pow => Constant::F64(x.powf(y)),
            BinaryOp::Min => Constant::F64(x.min(y)),
            BinaryOp::Max => Constant::F64(x.max(y)),
            BinaryOp::Eq => Constant::Bool(x == y),
            BinaryOp::Ne => Constant::Bool(x != y),
            BinaryOp::Lt => Constant::Bool(x < y),
            BinaryOp::Le => Constant::Bool(x <= y),
            BinaryOp::Gt => Constant::Bool(x > y),
            BinaryOp::Ge => Constant::Bool(x >= y),
            BinaryOp::And | BinaryOp::Or => return None,
        },
        (Constant::Bool(x), Constant::Bool(y)) => match op {
            BinaryOp::And => Constant::Bool(x && y),
            BinaryOp::Or => Constant::Bool(x || y),
            BinaryOp::Eq => Constant::Bool(x == y),
            BinaryOp::Ne => Constant::Bool(x != y),
            _ => return None,
        },
        _ => return None,
    })
}
