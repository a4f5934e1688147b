//! The rule language's expressions, already checked, and their evaluation over a message.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::Value;

use crate::message::{JsonRoot, Message, Meta};
use crate::value::{
    ArithOp, Num, Val, absent, absent1, arith, compare, equals, float, int_or_float, negate,
    parse_number,
};

/// A literal from the rule text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lit {
    /// `NULL`
    Null,
    /// `TRUE` / `FALSE`
    Bool(bool),
    /// An integer literal.
    Int(i64),
    /// A (finite) decimal literal.
    Float(f64),
    /// A string literal.
    Str(String),
}

/// One step of a field path after its first name.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Seg {
    /// `.name` or `['name']`
    Key(String),
    /// `[n]` (0-based; negative counts from the end)
    Index(i64),
}

/// A field reference: `temp`, `payload.temp`, `a.b[0].c`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Field {
    /// The first name.
    pub(crate) name: String,
    /// What follows it.
    pub(crate) path: Vec<Seg>,
    /// The metadata the name falls back to when the payload has no such column (only for
    /// a bare reserved name).
    pub(crate) meta: Option<Meta>,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    /// `=`
    Eq,
    /// `!=`, `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// A function of the language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    /// `abs(x)`
    Abs,
    /// `round(x [, digits])`
    Round,
    /// `floor(x)`
    Floor,
    /// `ceil(x)`, `ceiling(x)`
    Ceil,
    /// `sqrt(x)`
    Sqrt,
    /// `power(x, y)`, `pow(x, y)`
    Power,
    /// `lower(s)`
    Lower,
    /// `upper(s)`
    Upper,
    /// `length(s)`
    Length,
    /// `concat(a, b, ...)`
    Concat,
    /// `substring(s, start [, length])`, 1-based
    Substring,
    /// `coalesce(a, b, ...)`
    Coalesce,
    /// `nullif(a, b)`
    Nullif,
    /// `trim(s)`, `trim(BOTH 'x' FROM s)`
    Trim,
    /// `ltrim(s)`, `trim(LEADING ...)`
    LTrim,
    /// `rtrim(s)`, `trim(TRAILING ...)`
    RTrim,
    /// `topic()` / `topic(n)`, `clientid()`, ...: message metadata.
    Meta(Meta),
}

impl Func {
    /// The function of a name (case-insensitive) and how many arguments it takes.
    pub(crate) fn lookup(name: &str) -> Option<(Func, usize, usize)> {
        const MANY: usize = usize::MAX;
        const TABLE: [(&str, Func, usize, usize); 25] = [
            ("abs", Func::Abs, 1, 1),
            ("round", Func::Round, 1, 2),
            ("floor", Func::Floor, 1, 1),
            ("ceil", Func::Ceil, 1, 1),
            ("ceiling", Func::Ceil, 1, 1),
            ("sqrt", Func::Sqrt, 1, 1),
            ("power", Func::Power, 2, 2),
            ("pow", Func::Power, 2, 2),
            ("lower", Func::Lower, 1, 1),
            ("upper", Func::Upper, 1, 1),
            ("length", Func::Length, 1, 1),
            ("concat", Func::Concat, 1, MANY),
            ("substring", Func::Substring, 2, 3),
            ("substr", Func::Substring, 2, 3),
            ("coalesce", Func::Coalesce, 1, MANY),
            ("nullif", Func::Nullif, 2, 2),
            ("trim", Func::Trim, 1, 2),
            ("ltrim", Func::LTrim, 1, 2),
            ("rtrim", Func::RTrim, 1, 2),
            ("topic", Func::Meta(Meta::Topic), 0, 1),
            ("clientid", Func::Meta(Meta::ClientId), 0, 0),
            ("username", Func::Meta(Meta::Username), 0, 0),
            ("timestamp", Func::Meta(Meta::Timestamp), 0, 0),
            ("qos", Func::Meta(Meta::Qos), 0, 0),
            ("retain", Func::Meta(Meta::Retain), 0, 0),
        ];
        TABLE
            .iter()
            .find(|(n, ..)| n.eq_ignore_ascii_case(name))
            .map(|(_, f, min, max)| (*f, *min, *max))
    }
}

/// The target of a `CAST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CastTo {
    /// int, integer, bigint, ...
    Int,
    /// float, double, real, decimal, ...
    Float,
    /// string, text, varchar, ...
    Str,
    /// bool, boolean
    Bool,
}

/// A compiled `LIKE` pattern element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LikeTok {
    /// `%`
    Any,
    /// `_`
    One,
    /// any other character (or an escaped `%`/`_`)
    Char(char),
}

/// A `LIKE` pattern: compiled once when it is a literal.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LikePattern {
    /// A literal pattern, compiled when the rule was parsed.
    Fixed(Vec<LikeTok>),
    /// A pattern computed per message.
    Dynamic {
        /// The pattern expression.
        pattern: Box<Expr>,
        /// The `ESCAPE` character.
        escape: Option<char>,
    },
}

/// Compile a `LIKE` pattern. A trailing escape character matches itself.
pub(crate) fn compile_like(pattern: &str, escape: Option<char>) -> Vec<LikeTok> {
    let mut out = Vec::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        out.push(match c {
            c if Some(c) == escape => LikeTok::Char(chars.next().unwrap_or(c)),
            '%' => LikeTok::Any,
            '_' => LikeTok::One,
            c => LikeTok::Char(c),
        });
    }
    out
}

/// Whether `text` matches the compiled pattern (greedy with backtracking to the last `%`).
pub(crate) fn like_match(pattern: &[LikeTok], text: &str) -> bool {
    let (mut p, mut s) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    loop {
        let c = text.get(s..).and_then(|rest| rest.chars().next());
        let Some(c) = c else { break };
        match pattern.get(p) {
            Some(LikeTok::One) => {
                p += 1;
                s += c.len_utf8();
            }
            Some(LikeTok::Char(x)) if *x == c => {
                p += 1;
                s += c.len_utf8();
            }
            Some(LikeTok::Any) => {
                star = Some((p + 1, s));
                p += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    let skipped = text
                        .get(ss..)
                        .and_then(|rest| rest.chars().next())
                        .map_or(1, char::len_utf8);
                    star = Some((sp, ss + skipped));
                    p = sp;
                    s = ss + skipped;
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|t| *t == LikeTok::Any))
}

/// A checked expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    /// A literal.
    Lit(Lit),
    /// A payload field (falling back to metadata for reserved names).
    Field(Field),
    /// `-x`
    Neg(Box<Expr>),
    /// `NOT x`
    Not(Box<Expr>),
    /// `a + b`, ...
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    /// `a = b`, ...
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    /// `a AND b`
    And(Box<Expr>, Box<Expr>),
    /// `a OR b`
    Or(Box<Expr>, Box<Expr>),
    /// `a || b`
    Concat(Box<Expr>, Box<Expr>),
    /// `x [NOT] LIKE p`
    Like {
        /// The text.
        expr: Box<Expr>,
        /// The pattern.
        pattern: LikePattern,
        /// `NOT LIKE`
        negated: bool,
    },
    /// `x [NOT] IN (a, b, ...)`
    In {
        /// The value looked for.
        expr: Box<Expr>,
        /// The list.
        list: Vec<Expr>,
        /// `NOT IN`
        negated: bool,
    },
    /// `x [NOT] BETWEEN low AND high`
    Between {
        /// The value.
        expr: Box<Expr>,
        /// The lower bound (inclusive).
        low: Box<Expr>,
        /// The upper bound (inclusive).
        high: Box<Expr>,
        /// `NOT BETWEEN`
        negated: bool,
    },
    /// `x IS [NOT] NULL`
    IsNull {
        /// The value.
        expr: Box<Expr>,
        /// `IS NOT NULL`
        negated: bool,
    },
    /// `x IS [NOT] TRUE|FALSE`
    IsBool {
        /// The value.
        expr: Box<Expr>,
        /// TRUE or FALSE.
        value: bool,
        /// `IS NOT ...`
        negated: bool,
    },
    /// `CASE [operand] WHEN .. THEN .. [ELSE ..] END`
    Case {
        /// The operand compared with each WHEN (simple CASE).
        operand: Option<Box<Expr>>,
        /// `WHEN` condition (or value) and `THEN` result.
        arms: Vec<(Expr, Expr)>,
        /// `ELSE` result.
        default: Option<Box<Expr>>,
    },
    /// A function call, arity already checked.
    Call(Func, Vec<Expr>),
    /// `CAST(x AS type)`
    Cast(Box<Expr>, CastTo),
}

fn walk<'a>(mut v: &'a Value, path: &[Seg]) -> Val<'a> {
    for seg in path {
        let next = match (seg, v) {
            (Seg::Key(k), Value::Object(map)) => map.get(k),
            (Seg::Index(i), Value::Array(items)) => {
                // a negative index counts from the end: arr[-1] is the last element
                let at = if *i < 0 {
                    i64::try_from(items.len())
                        .ok()
                        .and_then(|n| n.checked_add(*i))
                } else {
                    Some(*i)
                };
                at.and_then(|i| usize::try_from(i).ok())
                    .and_then(|i| items.get(i))
            }
            _ => None,
        };
        match next {
            Some(n) => v = n,
            None => return Val::Undefined,
        }
    }
    Val::from_json(v)
}

/// SQL AND over unknowns.
fn and<'r>(a: Val<'_>, b: Val<'_>) -> Val<'r> {
    match (a.truth(), b.truth()) {
        (Some(false), _) | (_, Some(false)) => Val::Bool(false),
        (Some(true), Some(true)) => Val::Bool(true),
        _ => unknown(&a, &b),
    }
}

/// SQL OR over unknowns.
fn or<'r>(a: Val<'_>, b: Val<'_>) -> Val<'r> {
    match (a.truth(), b.truth()) {
        (Some(true), _) | (_, Some(true)) => Val::Bool(true),
        (Some(false), Some(false)) => Val::Bool(false),
        _ => unknown(&a, &b),
    }
}

/// The unknown truth value of an operation: undefined if an operand is, else NULL.
fn unknown<'r>(a: &Val<'_>, b: &Val<'_>) -> Val<'r> {
    absent(a, b).unwrap_or(Val::Null)
}

fn bool_or_unknown<'r>(b: Option<bool>, a: &Val<'_>, c: &Val<'_>) -> Val<'r> {
    b.map_or_else(|| unknown(a, c), Val::Bool)
}

fn cmp_op<'r>(op: CmpOp, a: &Val<'_>, b: &Val<'_>) -> Val<'r> {
    let r = match op {
        CmpOp::Eq => equals(a, b),
        CmpOp::Ne => equals(a, b).map(|e| !e),
        CmpOp::Lt => compare(a, b).map(Ordering::is_lt),
        CmpOp::Le => compare(a, b).map(Ordering::is_le),
        CmpOp::Gt => compare(a, b).map(Ordering::is_gt),
        CmpOp::Ge => compare(a, b).map(Ordering::is_ge),
    };
    bool_or_unknown(r, a, b)
}

fn not<'r>(v: &Val<'_>) -> Val<'r> {
    match v.truth() {
        Some(b) => Val::Bool(!b),
        None => unknown(v, v),
    }
}

impl Expr {
    /// Evaluate over one message. Never fails: anything without a result is NULL or
    /// undefined.
    pub(crate) fn eval<'a>(&'a self, m: &'a Message<'_>) -> Val<'a> {
        match self {
            Expr::Lit(l) => match l {
                Lit::Null => Val::Null,
                Lit::Bool(b) => Val::Bool(*b),
                Lit::Int(i) => Val::Int(*i),
                Lit::Float(f) => float(*f),
                Lit::Str(s) => Val::Str(Cow::Borrowed(s)),
            },
            Expr::Field(f) => field(f, m),
            Expr::Neg(e) => negate(&e.eval(m)),
            Expr::Not(e) => not(&e.eval(m)),
            Expr::Arith(op, a, b) => arith(*op, &a.eval(m), &b.eval(m)),
            Expr::Cmp(op, a, b) => cmp_op(*op, &a.eval(m), &b.eval(m)),
            Expr::And(a, b) => {
                let a = a.eval(m);
                if a.truth() == Some(false) {
                    return Val::Bool(false);
                }
                and(a, b.eval(m))
            }
            Expr::Or(a, b) => {
                let a = a.eval(m);
                if a.truth() == Some(true) {
                    return Val::Bool(true);
                }
                or(a, b.eval(m))
            }
            Expr::Concat(a, b) => {
                let (a, b) = (a.eval(m), b.eval(m));
                if let Some(v) = absent(&a, &b) {
                    return v;
                }
                match (a.text(), b.text()) {
                    (Some(x), Some(y)) => Val::Str(Cow::Owned(format!("{x}{y}"))),
                    _ => Val::Null,
                }
            }
            Expr::Like {
                expr,
                pattern,
                negated,
            } => {
                let v = expr.eval(m);
                let matched = match pattern {
                    LikePattern::Fixed(toks) => v.text().map(|t| like_match(toks, &t)),
                    LikePattern::Dynamic { pattern, escape } => {
                        let p = pattern.eval(m);
                        match (v.text(), p.text()) {
                            (Some(t), Some(p)) => Some(like_match(&compile_like(&p, *escape), &t)),
                            _ => return unknown(&v, &p),
                        }
                    }
                };
                bool_or_unknown(matched.map(|b| b != *negated), &v, &v)
            }
            Expr::In {
                expr,
                list,
                negated,
            } => {
                let v = expr.eval(m);
                let mut saw_unknown = false;
                for item in list {
                    match equals(&v, &item.eval(m)) {
                        Some(true) => return Val::Bool(!*negated),
                        Some(false) => {}
                        None => saw_unknown = true,
                    }
                }
                if saw_unknown {
                    unknown(&v, &v)
                } else {
                    Val::Bool(*negated)
                }
            }
            Expr::Between {
                expr,
                low,
                high,
                negated,
            } => {
                let v = expr.eval(m);
                let ge = cmp_op(CmpOp::Ge, &v, &low.eval(m));
                let le = cmp_op(CmpOp::Le, &v, &high.eval(m));
                let r = and(ge, le);
                if *negated { not(&r) } else { r }
            }
            Expr::IsNull { expr, negated } => Val::Bool(expr.eval(m).is_absent() != *negated),
            Expr::IsBool {
                expr,
                value,
                negated,
            } => Val::Bool((expr.eval(m).truth() == Some(*value)) != *negated),
            Expr::Case {
                operand,
                arms,
                default,
            } => {
                let op = operand.as_ref().map(|o| o.eval(m));
                for (when, then) in arms {
                    let w = when.eval(m);
                    let hit = match &op {
                        Some(o) => equals(o, &w) == Some(true),
                        None => w.truth() == Some(true),
                    };
                    if hit {
                        return then.eval(m);
                    }
                }
                default.as_ref().map_or(Val::Null, |d| d.eval(m))
            }
            Expr::Call(f, args) => call(*f, args, m),
            Expr::Cast(e, to) => cast(e.eval(m), *to),
        }
    }
}

fn field<'a>(f: &'a Field, m: &'a Message<'_>) -> Val<'a> {
    if let Some(v) = m.column(&f.name) {
        return walk(v, &f.path);
    }
    if f.path.is_empty() {
        return f.meta.map_or(Val::Undefined, |meta| m.meta(meta));
    }
    // `payload.x...`: walk the payload itself
    if f.name.eq_ignore_ascii_case("payload") {
        return match m.json_root() {
            Some(JsonRoot::Value(v)) => walk(v, &f.path),
            Some(JsonRoot::Object(map)) => match f.path.split_first() {
                Some((Seg::Key(k), rest)) => map.get(k).map_or(Val::Undefined, |v| walk(v, rest)),
                _ => Val::Undefined,
            },
            None => Val::Undefined,
        };
    }
    Val::Undefined
}

fn arg<'a>(args: &'a [Expr], i: usize, m: &'a Message<'_>) -> Val<'a> {
    args.get(i).map_or(Val::Undefined, |e| e.eval(m))
}

/// A numeric function of one argument.
fn num1<'r>(v: &Val<'_>, f: impl FnOnce(Num) -> Val<'r>) -> Val<'r> {
    if let Some(a) = absent1(v) {
        return a;
    }
    v.number().map_or(Val::Null, f)
}

/// A text function of one argument.
fn text1<'r>(v: &Val<'_>, f: impl FnOnce(&str) -> Val<'r>) -> Val<'r> {
    if let Some(a) = absent1(v) {
        return a;
    }
    v.text().map_or(Val::Null, |t| f(&t))
}

fn call<'a>(f: Func, args: &'a [Expr], m: &'a Message<'_>) -> Val<'a> {
    let a0 = || arg(args, 0, m);
    match f {
        Func::Meta(Meta::Topic) if !args.is_empty() => {
            let n = a0();
            if let Some(a) = absent1(&n) {
                return a;
            }
            n.number()
                .and_then(Num::as_integer)
                .map_or(Val::Null, |i| m.topic_level(i))
        }
        Func::Meta(meta) => m.meta(meta),
        Func::Abs => num1(&a0(), |n| match n {
            Num::Int(i) => i
                .checked_abs()
                .map_or_else(|| float((i as f64).abs()), Val::Int),
            Num::Float(x) => float(x.abs()),
        }),
        Func::Round => {
            let x = a0();
            if args.len() < 2 {
                return num1(&x, |n| match n {
                    Num::Int(i) => Val::Int(i),
                    Num::Float(f) => int_or_float(f.round()),
                });
            }
            let d = arg(args, 1, m);
            if let Some(a) = absent(&x, &d) {
                return a;
            }
            match (x.number(), d.number().and_then(Num::as_integer)) {
                (Some(n), Some(d)) => round_digits(n, d),
                _ => Val::Null,
            }
        }
        Func::Floor => num1(&a0(), |n| match n {
            Num::Int(i) => Val::Int(i),
            Num::Float(f) => int_or_float(f.floor()),
        }),
        Func::Ceil => num1(&a0(), |n| match n {
            Num::Int(i) => Val::Int(i),
            Num::Float(f) => int_or_float(f.ceil()),
        }),
        Func::Sqrt => num1(&a0(), |n| float(n.as_f64().sqrt())),
        Func::Power => {
            let (x, y) = (a0(), arg(args, 1, m));
            if let Some(a) = absent(&x, &y) {
                return a;
            }
            match (x.number(), y.number()) {
                (Some(Num::Int(b)), Some(Num::Int(e))) if e >= 0 => u32::try_from(e)
                    .ok()
                    .and_then(|e| b.checked_pow(e))
                    .map_or_else(|| float((b as f64).powf(e as f64)), Val::Int),
                (Some(b), Some(e)) => float(b.as_f64().powf(e.as_f64())),
                _ => Val::Null,
            }
        }
        Func::Lower => text1(&a0(), |t| Val::Str(Cow::Owned(t.to_lowercase()))),
        Func::Upper => text1(&a0(), |t| Val::Str(Cow::Owned(t.to_uppercase()))),
        Func::Length => {
            let v = a0();
            match &v {
                Val::Json(Value::Array(items)) => Val::Int(len_i64(items.len())),
                Val::Json(Value::Object(map)) => Val::Int(len_i64(map.len())),
                _ => text1(&v, |t| Val::Int(len_i64(t.chars().count()))),
            }
        }
        Func::Concat => {
            let mut out = String::new();
            for e in args {
                if let Some(t) = e.eval(m).text() {
                    out.push_str(&t);
                }
            }
            Val::Str(Cow::Owned(out))
        }
        Func::Substring => substring(a0(), arg(args, 1, m), args.get(2).map(|e| e.eval(m))),
        Func::Coalesce => {
            let mut last = Val::Undefined;
            for e in args {
                let v = e.eval(m);
                if !v.is_absent() {
                    return v;
                }
                if matches!(v, Val::Null) {
                    last = Val::Null;
                }
            }
            last
        }
        Func::Nullif => {
            let (x, y) = (a0(), arg(args, 1, m));
            if equals(&x, &y) == Some(true) {
                Val::Null
            } else {
                x
            }
        }
        Func::Trim | Func::LTrim | Func::RTrim => {
            let v = a0();
            let what = args.get(1).map(|e| e.eval(m));
            if let Some(a) = absent1(&v).or_else(|| what.as_ref().and_then(absent1)) {
                return a;
            }
            let Some(text) = v.text() else {
                return Val::Null;
            };
            let set: Option<Vec<char>> = match &what {
                Some(w) => match w.text() {
                    Some(t) => Some(t.chars().collect()),
                    None => return Val::Null,
                },
                None => None,
            };
            let strip = |c: char| set.as_ref().map_or(c.is_whitespace(), |s| s.contains(&c));
            let out = match f {
                Func::LTrim => text.trim_start_matches(strip),
                Func::RTrim => text.trim_end_matches(strip),
                _ => text.trim_matches(strip),
            };
            Val::Str(Cow::Owned(out.to_owned()))
        }
    }
}

fn len_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn round_digits<'r>(n: Num, digits: i64) -> Val<'r> {
    match n {
        Num::Int(i) if digits >= 0 => Val::Int(i),
        Num::Float(_) if digits > 15 => n.into_val(),
        _ if digits < -18 => match n {
            Num::Int(_) => Val::Int(0),
            Num::Float(_) => Val::Float(0.0),
        },
        _ => {
            let factor = 10f64.powi(i32::try_from(digits).unwrap_or(0));
            let r = (n.as_f64() * factor).round() / factor;
            match n {
                Num::Int(_) => int_or_float(r),
                Num::Float(_) => float(r),
            }
        }
    }
}

/// SQL `SUBSTRING(s FROM start FOR len)`: 1-based character positions; the part of
/// `[start, start + len)` that lies inside the string.
fn substring<'r>(s: Val<'_>, start: Val<'_>, len: Option<Val<'_>>) -> Val<'r> {
    if let Some(a) = absent(&s, &start).or_else(|| len.as_ref().and_then(absent1)) {
        return a;
    }
    let (Some(text), Some(start)) = (s.text(), start.number().and_then(Num::as_integer)) else {
        return Val::Null;
    };
    let end = match &len {
        None => i64::MAX,
        Some(l) => match l.number().and_then(Num::as_integer) {
            Some(l) if l >= 0 => start.saturating_add(l),
            _ => return Val::Null,
        },
    };
    let from = start.max(1);
    if end <= from {
        return Val::Str(Cow::Borrowed(""));
    }
    let skip = usize::try_from(from - 1).unwrap_or(usize::MAX);
    let take = usize::try_from(end - from).unwrap_or(usize::MAX);
    Val::Str(Cow::Owned(text.chars().skip(skip).take(take).collect()))
}

fn cast<'a>(v: Val<'a>, to: CastTo) -> Val<'a> {
    if v.is_absent() {
        return v;
    }
    match to {
        CastTo::Int => match &v {
            Val::Bool(b) => Val::Int(i64::from(*b)),
            _ => match v.number() {
                Some(Num::Int(i)) => Val::Int(i),
                Some(Num::Float(f)) => {
                    let t = f.trunc();
                    if t >= i64::MIN as f64 && t < i64::MAX as f64 {
                        Val::Int(t as i64)
                    } else {
                        Val::Null
                    }
                }
                None => Val::Null,
            },
        },
        CastTo::Float => match &v {
            Val::Bool(b) => Val::Float(if *b { 1.0 } else { 0.0 }),
            _ => v.number().map_or(Val::Null, |n| float(n.as_f64())),
        },
        CastTo::Str => match v {
            Val::Str(s) => Val::Str(s),
            other => other
                .text()
                .map_or(Val::Null, |t| Val::Str(Cow::Owned(t.into_owned()))),
        },
        CastTo::Bool => match &v {
            Val::Bool(b) => Val::Bool(*b),
            Val::Int(i) => Val::Bool(*i != 0),
            Val::Float(f) => Val::Bool(*f != 0.0),
            Val::Str(s) => {
                let t = s.trim();
                if t.eq_ignore_ascii_case("true") {
                    Val::Bool(true)
                } else if t.eq_ignore_ascii_case("false") {
                    Val::Bool(false)
                } else {
                    parse_number(t).map_or(Val::Null, |n| Val::Bool(!n.is_zero()))
                }
            }
            _ => Val::Null,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn like(p: &str, t: &str) -> bool {
        like_match(&compile_like(p, None), t)
    }

    #[test]
    fn like_wildcards() {
        assert!(like("sensor%", "sensor-1"));
        assert!(like("%-1", "sensor-1"));
        assert!(like("s_nsor", "sensor"));
        assert!(like("%", ""));
        assert!(like("%%a%%", "bab"));
        assert!(!like("_", ""));
        assert!(!like("a%b", "acbc"));
        assert!(like("a%b%c", "aXbYbZc"));
        assert!(like("ü_", "üß"));
        assert!(!like("abc", "abcd"));
    }

    #[test]
    fn like_escape() {
        let p = compile_like("100!%", Some('!'));
        assert!(like_match(&p, "100%"));
        assert!(!like_match(&p, "1000"));
        let p = compile_like("a!", Some('!'));
        assert!(like_match(&p, "a!"));
    }

    #[test]
    fn substring_is_one_based_like_sql() {
        let s = |x: &'static str| Val::Str(Cow::Borrowed(x));
        assert_eq!(substring(s("hello"), Val::Int(2), None), s("ello"));
        assert_eq!(
            substring(s("hello"), Val::Int(2), Some(Val::Int(3))),
            s("ell")
        );
        assert_eq!(
            substring(s("hello"), Val::Int(0), Some(Val::Int(3))),
            s("he")
        );
        assert_eq!(substring(s("hello"), Val::Int(9), None), s(""));
        assert_eq!(
            substring(s("hello"), Val::Int(1), Some(Val::Int(-1))),
            Val::Null
        );
        assert_eq!(
            substring(s("héllo"), Val::Int(2), Some(Val::Int(1))),
            s("é")
        );
        assert_eq!(
            substring(s("hello"), Val::Int(i64::MIN), Some(Val::Int(i64::MAX))),
            s("")
        );
    }

    #[test]
    fn round_with_digits() {
        assert_eq!(round_digits(Num::Float(1.23456), 2), Val::Float(1.23));
        assert_eq!(round_digits(Num::Int(1234), -2), Val::Int(1200));
        assert_eq!(round_digits(Num::Int(1234), 2), Val::Int(1234));
        assert_eq!(round_digits(Num::Float(1.5), 40), Val::Float(1.5));
        assert_eq!(round_digits(Num::Int(5), -40), Val::Int(0));
    }

    #[test]
    fn casts() {
        let s = |x: &'static str| Val::Str(Cow::Borrowed(x));
        assert_eq!(cast(s("31.7"), CastTo::Int), Val::Int(31));
        assert_eq!(cast(Val::Float(-2.9), CastTo::Int), Val::Int(-2));
        assert_eq!(cast(Val::Float(1e300), CastTo::Int), Val::Null);
        assert_eq!(cast(s("x"), CastTo::Int), Val::Null);
        assert_eq!(cast(Val::Int(3), CastTo::Float), Val::Float(3.0));
        assert_eq!(cast(Val::Int(3), CastTo::Str), s("3"));
        assert_eq!(cast(s("TRUE"), CastTo::Bool), Val::Bool(true));
        assert_eq!(cast(s("0"), CastTo::Bool), Val::Bool(false));
        assert_eq!(cast(Val::Undefined, CastTo::Int), Val::Undefined);
    }
}
