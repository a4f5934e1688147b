//! Values during evaluation: borrowed from the payload or the rule where possible, with the
//! coercions of the rule language (numeric strings, three-valued comparisons).

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::Value;

/// One value while a rule is evaluated.
///
/// `Undefined` is "no such thing" (a missing field, a topic level past the end) and is left
/// out of the output; `Null` is JSON `null`, SQL `NULL` or a computation without a result
/// (division by zero, a failed cast) and is written as `null`. Both behave as SQL NULL in
/// comparisons and logic. Floats are always finite: a computation that would give NaN or an
/// infinity gives `Null` instead.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val<'a> {
    /// Nothing there: a missing field.
    Undefined,
    /// JSON null / SQL NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer (JSON integers that fit in i64).
    Int(i64),
    /// A finite float.
    Float(f64),
    /// A string.
    Str(Cow<'a, str>),
    /// A JSON array or object from the payload.
    Json(&'a Value),
}

/// A number after coercion.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Num {
    /// An integer.
    Int(i64),
    /// A finite float.
    Float(f64),
}

impl Num {
    pub(crate) fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    /// The number as an integer argument (a position, a count): integers, and floats
    /// without a fractional part.
    pub(crate) fn as_integer(self) -> Option<i64> {
        match self {
            Num::Int(i) => Some(i),
            Num::Float(_) => match int_or_float(self.as_f64()) {
                Val::Int(i) => Some(i),
                _ => None,
            },
        }
    }

    pub(crate) fn is_zero(self) -> bool {
        match self {
            Num::Int(i) => i == 0,
            Num::Float(f) => f == 0.0,
        }
    }

    pub(crate) fn into_val<'a>(self) -> Val<'a> {
        match self {
            Num::Int(i) => Val::Int(i),
            Num::Float(f) => float(f),
        }
    }
}

/// A float result: `Null` unless finite.
pub(crate) fn float<'a>(f: f64) -> Val<'a> {
    if f.is_finite() {
        Val::Float(f)
    } else {
        Val::Null
    }
}

/// An integral float as an integer when it fits, else the float.
pub(crate) fn int_or_float<'a>(f: f64) -> Val<'a> {
    // i64::MAX as f64 rounds up to 2^63, so the upper bound is exclusive
    if f.is_finite() && f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64 {
        Val::Int(f as i64)
    } else {
        float(f)
    }
}

/// Parse a string as a number the way devices send them: `"31"`, `"31.5"`, `" -2e3 "`.
/// Infinities and NaN are not numbers here.
pub(crate) fn parse_number(s: &str) -> Option<Num> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(i) = s.parse::<i64>() {
        return Some(Num::Int(i));
    }
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() => Some(Num::Float(f)),
        _ => None,
    }
}

/// Text of a finite float as JSON writes it (`31.0`, `0.1`).
pub(crate) fn float_text(f: f64) -> String {
    serde_json::Number::from_f64(f).map_or_else(|| f.to_string(), |n| n.to_string())
}

impl<'a> Val<'a> {
    /// The value of a JSON node, borrowed.
    pub(crate) fn from_json(v: &'a Value) -> Val<'a> {
        match v {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Val::Int(i),
                None => n.as_f64().map_or(Val::Null, float),
            },
            Value::String(s) => Val::Str(Cow::Borrowed(s)),
            Value::Array(_) | Value::Object(_) => Val::Json(v),
        }
    }

    /// Whether this is NULL or undefined.
    pub(crate) fn is_absent(&self) -> bool {
        matches!(self, Val::Undefined | Val::Null)
    }

    /// The truth value: only booleans are true or false; anything else is unknown.
    pub(crate) fn truth(&self) -> Option<bool> {
        match self {
            Val::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The value as a number: numbers, and strings that parse as numbers.
    pub(crate) fn number(&self) -> Option<Num> {
        match self {
            Val::Int(i) => Some(Num::Int(*i)),
            Val::Float(f) => Some(Num::Float(*f)),
            Val::Str(s) => parse_number(s),
            _ => None,
        }
    }

    /// The value as text: strings as they are, numbers and booleans written out, arrays and
    /// objects as JSON. `None` for NULL and undefined.
    pub(crate) fn text(&self) -> Option<Cow<'_, str>> {
        match self {
            Val::Undefined | Val::Null => None,
            Val::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
            Val::Int(i) => Some(Cow::Owned(i.to_string())),
            Val::Float(f) => Some(Cow::Owned(float_text(*f))),
            Val::Str(s) => Some(Cow::Borrowed(s)),
            Val::Json(v) => serde_json::to_string(v).ok().map(Cow::Owned),
        }
    }

    /// The value for the output: `None` when undefined (the column is left out).
    pub(crate) fn into_json(self) -> Option<Value> {
        match self {
            Val::Undefined => None,
            Val::Null => Some(Value::Null),
            Val::Bool(b) => Some(Value::Bool(b)),
            Val::Int(i) => Some(Value::from(i)),
            Val::Float(f) => {
                Some(serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number))
            }
            Val::Str(s) => Some(Value::String(s.into_owned())),
            Val::Json(v) => Some(v.clone()),
        }
    }
}

/// The NULL-ish result of an operation on `a` and `b`, if either is absent: undefined wins
/// over NULL so that an expression over a missing field stays missing in the output.
pub(crate) fn absent<'r>(a: &Val<'_>, b: &Val<'_>) -> Option<Val<'r>> {
    if matches!(a, Val::Undefined) || matches!(b, Val::Undefined) {
        Some(Val::Undefined)
    } else if matches!(a, Val::Null) || matches!(b, Val::Null) {
        Some(Val::Null)
    } else {
        None
    }
}

/// The absence to report for a single operand.
pub(crate) fn absent1<'r>(a: &Val<'_>) -> Option<Val<'r>> {
    absent(a, &Val::Bool(true))
}

fn num_cmp(a: Num, b: Num) -> Option<Ordering> {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => Some(x.cmp(&y)),
        _ => a.as_f64().partial_cmp(&b.as_f64()),
    }
}

/// Order two values: numbers (and numeric strings against numbers) numerically, strings
/// by bytes, booleans false < true. `None` when either is absent or they do not compare.
pub(crate) fn compare(a: &Val<'_>, b: &Val<'_>) -> Option<Ordering> {
    match (a, b) {
        (Val::Undefined | Val::Null, _) | (_, Val::Undefined | Val::Null) => None,
        (Val::Str(x), Val::Str(y)) => Some(x.as_ref().cmp(y.as_ref())),
        (Val::Bool(x), Val::Bool(y)) => Some(x.cmp(y)),
        (Val::Json(_) | Val::Bool(_), _) | (_, Val::Json(_) | Val::Bool(_)) => None,
        _ => num_cmp(a.number()?, b.number()?),
    }
}

/// SQL equality: unknown (`None`) when either side is absent, false for values of kinds
/// that do not compare (a number and a non-numeric string).
pub(crate) fn equals(a: &Val<'_>, b: &Val<'_>) -> Option<bool> {
    if a.is_absent() || b.is_absent() {
        return None;
    }
    if let (Val::Json(x), Val::Json(y)) = (a, b) {
        return Some(x == y);
    }
    Some(compare(a, b) == Some(Ordering::Equal))
}

/// An arithmetic operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArithOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Rem,
}

/// `a op b`: integers stay integers unless they overflow (then floats) or a division is
/// inexact; numeric strings count as numbers; division or remainder by zero is NULL; any
/// other operand (a non-numeric string, a boolean, an object) gives NULL.
pub(crate) fn arith<'r>(op: ArithOp, a: &Val<'_>, b: &Val<'_>) -> Val<'r> {
    if let Some(v) = absent(a, b) {
        return v;
    }
    let (Some(x), Some(y)) = (a.number(), b.number()) else {
        return Val::Null;
    };
    if matches!(op, ArithOp::Div | ArithOp::Rem) && y.is_zero() {
        return Val::Null;
    }
    if let (Num::Int(i), Num::Int(j)) = (x, y) {
        let exact = match op {
            ArithOp::Add => i.checked_add(j),
            ArithOp::Sub => i.checked_sub(j),
            ArithOp::Mul => i.checked_mul(j),
            ArithOp::Div => match i.checked_rem(j) {
                Some(0) => i.checked_div(j),
                _ => None,
            },
            // i64::MIN % -1 overflows in Rust but is 0 mathematically
            ArithOp::Rem => Some(i.checked_rem(j).unwrap_or(0)),
        };
        if let Some(v) = exact {
            return Val::Int(v);
        }
    }
    let (f, g) = (x.as_f64(), y.as_f64());
    float(match op {
        ArithOp::Add => f + g,
        ArithOp::Sub => f - g,
        ArithOp::Mul => f * g,
        ArithOp::Div => f / g,
        ArithOp::Rem => f % g,
    })
}

/// `-a`.
pub(crate) fn negate<'r>(a: &Val<'_>) -> Val<'r> {
    if let Some(v) = absent1(a) {
        return v;
    }
    match a.number() {
        Some(Num::Int(i)) => i.checked_neg().map_or_else(|| float(-(i as f64)), Val::Int),
        Some(Num::Float(f)) => float(-f),
        None => Val::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Val<'_> {
        Val::Str(Cow::Borrowed(x))
    }

    #[test]
    fn numeric_strings_compare_numerically_with_numbers() {
        assert_eq!(compare(&s("31.5"), &Val::Int(30)), Some(Ordering::Greater));
        assert_eq!(compare(&Val::Int(9), &s("10")), Some(Ordering::Less));
        assert_eq!(equals(&s(" 5 "), &Val::Float(5.0)), Some(true));
        // two strings compare as strings
        assert_eq!(compare(&s("9"), &s("10")), Some(Ordering::Greater));
        assert_eq!(compare(&s("abc"), &Val::Int(1)), None);
        assert_eq!(equals(&s("abc"), &Val::Int(1)), Some(false));
    }

    #[test]
    fn absent_values_make_comparisons_unknown() {
        assert_eq!(equals(&Val::Null, &Val::Null), None);
        assert_eq!(equals(&Val::Undefined, &Val::Int(1)), None);
        assert_eq!(compare(&Val::Int(1), &Val::Null), None);
    }

    #[test]
    fn integer_arithmetic_stays_integer_until_it_cannot() {
        assert_eq!(arith(ArithOp::Add, &Val::Int(2), &Val::Int(3)), Val::Int(5));
        assert_eq!(arith(ArithOp::Div, &Val::Int(6), &Val::Int(3)), Val::Int(2));
        assert_eq!(
            arith(ArithOp::Div, &Val::Int(7), &Val::Int(2)),
            Val::Float(3.5)
        );
        assert_eq!(
            arith(ArithOp::Rem, &Val::Int(7), &Val::Int(-2)),
            Val::Int(1)
        );
        assert_eq!(
            arith(ArithOp::Rem, &Val::Int(i64::MIN), &Val::Int(-1)),
            Val::Int(0)
        );
        assert_eq!(
            arith(ArithOp::Add, &Val::Int(i64::MAX), &Val::Int(1)),
            Val::Float(i64::MAX as f64 + 1.0)
        );
        assert_eq!(
            arith(ArithOp::Div, &Val::Int(i64::MIN), &Val::Int(-1)),
            Val::Float(-(i64::MIN as f64))
        );
        assert_eq!(
            arith(ArithOp::Mul, &s("1.5"), &Val::Int(2)),
            Val::Float(3.0)
        );
    }

    #[test]
    fn division_by_zero_is_null() {
        assert_eq!(arith(ArithOp::Div, &Val::Int(1), &Val::Int(0)), Val::Null);
        assert_eq!(arith(ArithOp::Rem, &Val::Int(1), &Val::Int(0)), Val::Null);
        assert_eq!(
            arith(ArithOp::Div, &Val::Float(1.0), &Val::Float(0.0)),
            Val::Null
        );
        assert_eq!(arith(ArithOp::Div, &Val::Int(1), &s("0.0")), Val::Null);
    }

    #[test]
    fn overflowing_floats_become_null() {
        assert_eq!(
            arith(ArithOp::Mul, &Val::Float(1e308), &Val::Float(10.0)),
            Val::Null
        );
    }

    #[test]
    fn undefined_wins_over_null() {
        assert_eq!(
            arith(ArithOp::Add, &Val::Null, &Val::Undefined),
            Val::Undefined
        );
        assert_eq!(arith(ArithOp::Add, &Val::Null, &Val::Int(1)), Val::Null);
        assert_eq!(arith(ArithOp::Add, &s("x"), &Val::Int(1)), Val::Null);
    }

    #[test]
    fn negation() {
        assert_eq!(negate(&Val::Int(3)), Val::Int(-3));
        assert_eq!(negate(&Val::Int(i64::MIN)), Val::Float(-(i64::MIN as f64)));
        assert_eq!(negate(&s("2.5")), Val::Float(-2.5));
        assert_eq!(negate(&Val::Bool(true)), Val::Null);
    }

    #[test]
    fn parse_number_refuses_infinities() {
        assert_eq!(parse_number("inf"), None);
        assert_eq!(parse_number("NaN"), None);
        assert_eq!(parse_number("1e999"), None);
        assert_eq!(parse_number(""), None);
        assert_eq!(parse_number("+7"), Some(Num::Int(7)));
        assert_eq!(parse_number("1e3"), Some(Num::Float(1000.0)));
    }

    #[test]
    fn text_of_values() {
        assert_eq!(Val::Float(31.0).text().as_deref(), Some("31.0"));
        assert_eq!(Val::Int(-4).text().as_deref(), Some("-4"));
        assert_eq!(Val::Null.text(), None);
        let v = serde_json::json!([1, "a"]);
        assert_eq!(Val::Json(&v).text().as_deref(), Some(r#"[1,"a"]"#));
    }
}
