//! From rule text to a checked rule: sqlparser's tokenizer, the FROM strings turned into
//! quoted identifiers, sqlparser's parser, then the AST checked and lowered to [`Expr`].

use std::fmt::Display;

use midge_codec::TopicFilter;
use sqlparser::ast::{
    self as sql, BinaryOperator, CeilFloorKind, DataType, DateTimeField, FunctionArg,
    FunctionArgExpr, FunctionArguments, GroupByExpr, InTarget, ObjectName, ObjectNamePart,
    SelectFlavor, SelectItem, SetExpr, Statement, Subscript, TableFactor, TrimWhereField,
    UnaryOperator, WildcardAdditionalOptions,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer, Word};

use crate::RuleError;
use crate::expr::{CastTo, CmpOp, Expr, Field, Func, LikePattern, Lit, Seg, compile_like};
use crate::message::Meta;
use crate::value::ArithOp;

/// The longest rule text accepted, in bytes.
pub const MAX_RULE_LEN: usize = 64 * 1024;
/// The most tokens (whitespace not counted) a rule may have.
const MAX_TOKENS: usize = 4096;
/// The deepest expression nesting accepted (evaluation recurses this deep).
const MAX_DEPTH: usize = 128;

/// One column of the SELECT list.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Column {
    /// `*`: every payload column.
    All,
    /// `expr [AS name]`.
    Expr {
        /// The output column name.
        name: String,
        /// Its value.
        expr: Expr,
    },
}

/// A parsed and checked rule.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub(crate) filters: Vec<TopicFilter>,
    pub(crate) columns: Vec<Column>,
    pub(crate) condition: Option<Expr>,
    /// Whether anything looks at payload columns (else the payload is never parsed).
    pub(crate) needs_body: bool,
}

pub(crate) fn parse(text: &str) -> Result<Parsed, RuleError> {
    if text.len() > MAX_RULE_LEN {
        return Err(RuleError::TooLong {
            len: text.len(),
            max: MAX_RULE_LEN,
        });
    }
    let dialect = GenericDialect {};
    let mut tokens = Tokenizer::new(&dialect, text)
        .tokenize_with_location()
        .map_err(|e| RuleError::Syntax(e.to_string()))?;
    let significant = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .count();
    if significant > MAX_TOKENS {
        return Err(RuleError::TooComplex("more than 4096 tokens"));
    }
    quote_filters(&mut tokens);
    let mut statements = Parser::new(&dialect)
        .with_tokens_with_locations(tokens)
        .parse_statements()
        .map_err(|e| match e {
            ParserError::RecursionLimitExceeded => {
                RuleError::TooComplex("expressions nested too deeply")
            }
            ParserError::TokenizerError(m) | ParserError::ParserError(m) => RuleError::Syntax(m),
        })?;
    let statement = match statements.len() {
        0 => return Err(RuleError::Empty),
        1 => statements.pop().ok_or(RuleError::Empty)?,
        n => return Err(RuleError::MultipleStatements(n)),
    };
    let Statement::Query(query) = statement else {
        return Err(RuleError::NotSelect(first_words(&statement)));
    };
    check_query(&query)?;
    let select = match *query.body {
        SetExpr::Select(select) => select,
        SetExpr::SetOperation { op, .. } => return Err(unsupported(op)),
        SetExpr::Query(_) => return Err(unsupported("a parenthesised query")),
        other => return Err(RuleError::NotSelect(first_words(&other))),
    };
    let filters = check_select(&select)?;
    let mut lower = Lower::default();
    let columns = select
        .projection
        .iter()
        .map(|item| lower.column(item))
        .collect::<Result<Vec<_>, _>>()?;
    let condition = select
        .selection
        .as_ref()
        .map(|e| lower.expr(e))
        .transpose()?;
    Ok(Parsed {
        filters,
        columns,
        condition,
        needs_body: lower.needs_body,
    })
}

/// Turn the single-quoted strings that follow a top-level FROM (and its commas) into
/// quoted identifiers, which sqlparser accepts as table names.
fn quote_filters(tokens: &mut [TokenWithSpan]) {
    #[derive(PartialEq)]
    enum State {
        Outside,
        ExpectFilter,
        AfterFilter,
    }
    let mut state = State::Outside;
    let mut depth = 0i64;
    for t in tokens.iter_mut() {
        if matches!(t.token, Token::Whitespace(_)) {
            continue;
        }
        match state {
            State::ExpectFilter => match &mut t.token {
                Token::SingleQuotedString(s) => {
                    t.token = Token::Word(Word {
                        value: std::mem::take(s),
                        quote_style: Some('"'),
                        keyword: Keyword::NoKeyword,
                    });
                    state = State::AfterFilter;
                    continue;
                }
                Token::Word(w) if w.quote_style.is_some() => {
                    state = State::AfterFilter;
                    continue;
                }
                _ => state = State::Outside,
            },
            State::AfterFilter => {
                if t.token == Token::Comma {
                    state = State::ExpectFilter;
                    continue;
                }
                state = State::Outside;
            }
            State::Outside => {}
        }
        match &t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::Word(w)
                if w.keyword == Keyword::FROM && w.quote_style.is_none() && depth == 0 =>
            {
                state = State::ExpectFilter;
            }
            _ => {}
        }
    }
}

fn unsupported(what: impl Display) -> RuleError {
    RuleError::Unsupported(snippet(what))
}

/// Some text for an error message, cut to a readable length.
fn snippet(what: impl Display) -> String {
    const MAX: usize = 60;
    let s = what.to_string();
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", s.get(..cut).unwrap_or_default()),
        None => s,
    }
}

/// The first words of a statement, to name what it is (`INSERT INTO`, `DELETE FROM`).
fn first_words(what: impl Display) -> String {
    let s = what.to_string();
    s.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

fn check_query(q: &sql::Query) -> Result<(), RuleError> {
    let found = [
        (q.with.is_some(), "WITH"),
        (q.order_by.is_some(), "ORDER BY"),
        (q.limit_clause.is_some(), "LIMIT/OFFSET"),
        (q.fetch.is_some(), "FETCH"),
        (!q.locks.is_empty(), "FOR UPDATE/SHARE"),
        (q.for_clause.is_some(), "FOR XML/JSON"),
        (q.settings.is_some(), "SETTINGS"),
        (q.format_clause.is_some(), "FORMAT"),
        (!q.pipe_operators.is_empty(), "a pipe operator"),
    ];
    match found.iter().find(|(present, _)| *present) {
        Some((_, what)) => Err(unsupported(what)),
        None => Ok(()),
    }
}

/// Check what a rule cannot have and return the FROM filters.
fn check_select(s: &sql::Select) -> Result<Vec<TopicFilter>, RuleError> {
    let no_group_by =
        matches!(&s.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty());
    let found = [
        (s.distinct.is_some(), "DISTINCT"),
        (s.top.is_some(), "TOP"),
        (s.select_modifiers.is_some(), "a SELECT modifier"),
        (s.exclude.is_some(), "EXCLUDE"),
        (s.into.is_some(), "SELECT INTO"),
        (!s.lateral_views.is_empty(), "LATERAL VIEW"),
        (s.prewhere.is_some(), "PREWHERE"),
        (!s.connect_by.is_empty(), "CONNECT BY"),
        (!no_group_by, "GROUP BY"),
        (!s.cluster_by.is_empty(), "CLUSTER BY"),
        (!s.distribute_by.is_empty(), "DISTRIBUTE BY"),
        (!s.sort_by.is_empty(), "SORT BY"),
        (s.having.is_some(), "HAVING"),
        (!s.named_window.is_empty(), "WINDOW"),
        (s.qualify.is_some(), "QUALIFY"),
        (s.value_table_mode.is_some(), "SELECT AS VALUE/STRUCT"),
        (s.flavor != SelectFlavor::Standard, "FROM before SELECT"),
    ];
    if let Some((_, what)) = found.iter().find(|(present, _)| *present) {
        return Err(unsupported(what));
    }
    if s.from.is_empty() {
        return Err(RuleError::MissingFrom);
    }
    let mut filters = Vec::with_capacity(s.from.len());
    for from in &s.from {
        if !from.joins.is_empty() {
            return Err(unsupported("JOIN"));
        }
        let TableFactor::Table {
            name,
            alias,
            args,
            with_hints,
            version,
            with_ordinality,
            partitions,
            json_path,
            sample,
            index_directives,
            inheritance,
        } = &from.relation
        else {
            return Err(match &from.relation {
                TableFactor::Derived { .. } => unsupported("a subquery in FROM"),
                other => RuleError::UnquotedFilter(snippet(other)),
            });
        };
        if alias.is_some() {
            return Err(unsupported("an alias for a topic filter"));
        }
        if args.is_some()
            || !with_hints.is_empty()
            || version.is_some()
            || *with_ordinality
            || !partitions.is_empty()
            || json_path.is_some()
            || sample.is_some()
            || !index_directives.is_empty()
            || inheritance.is_some()
        {
            return Err(RuleError::UnquotedFilter(snippet(&from.relation)));
        }
        let filter = quoted_name(name).ok_or_else(|| RuleError::UnquotedFilter(snippet(name)))?;
        let parsed =
            TopicFilter::new(filter.as_str()).map_err(|source| RuleError::InvalidFilter {
                filter: snippet(&filter),
                source,
            })?;
        filters.push(parsed);
    }
    Ok(filters)
}

fn quoted_name(name: &ObjectName) -> Option<String> {
    match name.0.as_slice() {
        [ObjectNamePart::Identifier(id)] if id.quote_style.is_some() => Some(id.value.clone()),
        _ => None,
    }
}

fn plain_wildcard(o: &WildcardAdditionalOptions) -> bool {
    o.opt_ilike.is_none()
        && o.opt_exclude.is_none()
        && o.opt_except.is_none()
        && o.opt_replace.is_none()
        && o.opt_rename.is_none()
        && o.opt_alias.is_none()
}

/// Names of aggregate functions, refused with their own message.
const AGGREGATES: [&str; 8] = [
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "array_agg",
    "string_agg",
    "group_concat",
];

/// Lowering from sqlparser's AST to [`Expr`], with a depth budget.
#[derive(Debug, Default)]
struct Lower {
    depth: usize,
    needs_body: bool,
}

impl Lower {
    fn column(&mut self, item: &SelectItem) -> Result<Column, RuleError> {
        match item {
            SelectItem::UnnamedExpr(e) => {
                let expr = self.expr(e)?;
                let name = match e {
                    sql::Expr::Identifier(id) => id.value.clone(),
                    sql::Expr::CompoundIdentifier(ids) => ids
                        .last()
                        .map_or_else(|| e.to_string(), |id| id.value.clone()),
                    other => other.to_string(),
                };
                Ok(Column::Expr { name, expr })
            }
            SelectItem::ExprWithAlias { expr, alias } => Ok(Column::Expr {
                expr: self.expr(expr)?,
                name: alias.value.clone(),
            }),
            SelectItem::ExprWithAliases { .. } => {
                Err(unsupported("more than one alias for a column"))
            }
            SelectItem::Wildcard(o) if plain_wildcard(o) => {
                self.needs_body = true;
                Ok(Column::All)
            }
            SelectItem::QualifiedWildcard(
                sql::SelectItemQualifiedWildcardKind::ObjectName(n),
                o,
            ) if plain_wildcard(o)
                && matches!(n.0.as_slice(), [ObjectNamePart::Identifier(id)]
                        if id.value.eq_ignore_ascii_case("payload")) =>
            {
                self.needs_body = true;
                Ok(Column::All)
            }
            other => Err(unsupported(format_args!("the select item {other}"))),
        }
    }

    fn expr(&mut self, e: &sql::Expr) -> Result<Expr, RuleError> {
        self.depth += 1;
        let r = if self.depth > MAX_DEPTH {
            Err(RuleError::TooComplex("expressions nested too deeply"))
        } else {
            self.expr_inner(e)
        };
        self.depth -= 1;
        r
    }

    fn boxed(&mut self, e: &sql::Expr) -> Result<Box<Expr>, RuleError> {
        self.expr(e).map(Box::new)
    }

    fn field(&mut self, name: &str, path: Vec<Seg>) -> Expr {
        self.needs_body = true;
        let meta = if path.is_empty() {
            Meta::from_name(name)
        } else {
            None
        };
        Expr::Field(Field {
            name: name.to_owned(),
            path,
            meta,
        })
    }

    fn expr_inner(&mut self, e: &sql::Expr) -> Result<Expr, RuleError> {
        use sql::Expr as E;
        Ok(match e {
            E::Identifier(id) => self.field(&id.value, Vec::new()),
            E::CompoundIdentifier(ids) => {
                let Some((first, rest)) = ids.split_first() else {
                    return Err(unsupported("an empty identifier"));
                };
                let path = rest.iter().map(|id| Seg::Key(id.value.clone())).collect();
                self.field(&first.value, path)
            }
            E::CompoundFieldAccess { root, access_chain } => {
                let (name, mut path) = match root.as_ref() {
                    E::Identifier(id) => (id.value.clone(), Vec::new()),
                    E::CompoundIdentifier(ids) => match ids.split_first() {
                        Some((first, rest)) => (
                            first.value.clone(),
                            rest.iter().map(|id| Seg::Key(id.value.clone())).collect(),
                        ),
                        None => return Err(unsupported("an empty identifier")),
                    },
                    other => return Err(unsupported(format_args!("field access on {other}"))),
                };
                for access in access_chain {
                    match access {
                        sql::AccessExpr::Dot(E::Identifier(id)) => {
                            path.push(Seg::Key(id.value.clone()));
                        }
                        sql::AccessExpr::Dot(E::CompoundIdentifier(ids)) => {
                            path.extend(ids.iter().map(|id| Seg::Key(id.value.clone())));
                        }
                        sql::AccessExpr::Subscript(Subscript::Index { index }) => {
                            path.push(subscript(index)?);
                        }
                        other => return Err(unsupported(format_args!("the field access {other}"))),
                    }
                }
                self.field(&name, path)
            }
            E::Value(v) => Expr::Lit(literal(&v.value)?),
            E::Nested(inner) => self.expr(inner)?,
            E::UnaryOp { op, expr } => match op {
                UnaryOperator::Minus => Expr::Neg(self.boxed(expr)?),
                UnaryOperator::Plus => Expr::Arith(
                    ArithOp::Add,
                    Box::new(Expr::Lit(Lit::Int(0))),
                    self.boxed(expr)?,
                ),
                UnaryOperator::Not => Expr::Not(self.boxed(expr)?),
                other => return Err(unsupported(format_args!("the operator {other}"))),
            },
            E::BinaryOp { left, op, right } => {
                let arith = |o| Some(Ok(o));
                let kind = match op {
                    BinaryOperator::Plus => arith(ArithOp::Add),
                    BinaryOperator::Minus => arith(ArithOp::Sub),
                    BinaryOperator::Multiply => arith(ArithOp::Mul),
                    BinaryOperator::Divide => arith(ArithOp::Div),
                    BinaryOperator::Modulo => arith(ArithOp::Rem),
                    BinaryOperator::Eq => Some(Err(CmpOp::Eq)),
                    BinaryOperator::NotEq => Some(Err(CmpOp::Ne)),
                    BinaryOperator::Lt => Some(Err(CmpOp::Lt)),
                    BinaryOperator::LtEq => Some(Err(CmpOp::Le)),
                    BinaryOperator::Gt => Some(Err(CmpOp::Gt)),
                    BinaryOperator::GtEq => Some(Err(CmpOp::Ge)),
                    _ => None,
                };
                let r = match (&kind, quoted_text(right)) {
                    // `type = "door"`: the value compared with, as EMQX's docs write it
                    (Some(Err(_)), Some(text)) => Box::new(text),
                    _ => self.boxed(right)?,
                };
                let l = self.boxed(left)?;
                match (kind, op) {
                    (Some(Ok(a)), _) => Expr::Arith(a, l, r),
                    (Some(Err(c)), _) => Expr::Cmp(c, l, r),
                    (None, BinaryOperator::And) => Expr::And(l, r),
                    (None, BinaryOperator::Or) => Expr::Or(l, r),
                    (None, BinaryOperator::StringConcat) => Expr::Concat(l, r),
                    (None, other) => return Err(unsupported(format_args!("the operator {other}"))),
                }
            }
            E::Like {
                negated,
                any,
                expr,
                pattern,
                escape_char,
            } => {
                if *any {
                    return Err(unsupported("LIKE ANY"));
                }
                let escape = match escape_char.as_deref() {
                    None => None,
                    Some(E::Value(v)) => match v.value.clone().into_string() {
                        Some(s) if s.chars().count() == 1 => s.chars().next(),
                        _ => return Err(unsupported("an ESCAPE that is not one character")),
                    },
                    Some(_) => return Err(unsupported("an ESCAPE that is not one character")),
                };
                let expr = self.boxed(expr)?;
                let pattern = match pattern.as_ref() {
                    E::Value(v) if v.value.clone().into_string().is_some() => {
                        let p = v.value.clone().into_string().unwrap_or_default();
                        LikePattern::Fixed(compile_like(&p, escape))
                    }
                    E::Identifier(id) if id.quote_style == Some('"') => {
                        LikePattern::Fixed(compile_like(&id.value, escape))
                    }
                    other => LikePattern::Dynamic {
                        pattern: self.boxed(other)?,
                        escape,
                    },
                };
                Expr::Like {
                    expr,
                    pattern,
                    negated: *negated,
                }
            }
            E::ILike { .. } => return Err(unsupported("ILIKE (use lower(x) LIKE ...)")),
            E::In {
                expr,
                target,
                negated,
                global,
            } => {
                if *global {
                    return Err(unsupported("GLOBAL IN"));
                }
                let list = match target {
                    InTarget::List(list) => list,
                    InTarget::Subquery(_) => return Err(unsupported("a subquery")),
                    _ => return Err(unsupported("IN with anything but a list of values")),
                };
                Expr::In {
                    expr: self.boxed(expr)?,
                    list: list
                        .iter()
                        .map(|e| match quoted_text(e) {
                            Some(text) => Ok(text),
                            None => self.expr(e),
                        })
                        .collect::<Result<_, _>>()?,
                    negated: *negated,
                }
            }
            E::Between {
                expr,
                negated,
                low,
                high,
            } => Expr::Between {
                expr: self.boxed(expr)?,
                low: self.boxed(low)?,
                high: self.boxed(high)?,
                negated: *negated,
            },
            E::IsNull(x) => Expr::IsNull {
                expr: self.boxed(x)?,
                negated: false,
            },
            E::IsNotNull(x) => Expr::IsNull {
                expr: self.boxed(x)?,
                negated: true,
            },
            E::IsTrue(x) | E::IsNotTrue(x) | E::IsFalse(x) | E::IsNotFalse(x) => Expr::IsBool {
                expr: self.boxed(x)?,
                value: matches!(e, E::IsTrue(_) | E::IsNotTrue(_)),
                negated: matches!(e, E::IsNotTrue(_) | E::IsNotFalse(_)),
            },
            E::Case {
                operand,
                conditions,
                else_result,
                ..
            } => Expr::Case {
                operand: operand.as_deref().map(|o| self.boxed(o)).transpose()?,
                arms: conditions
                    .iter()
                    .map(|w| Ok((self.expr(&w.condition)?, self.expr(&w.result)?)))
                    .collect::<Result<_, RuleError>>()?,
                default: else_result.as_deref().map(|d| self.boxed(d)).transpose()?,
            },
            E::Cast {
                expr,
                data_type,
                format,
                ..
            } => {
                if format.is_some() {
                    return Err(unsupported("CAST ... FORMAT"));
                }
                Expr::Cast(self.boxed(expr)?, cast_type(data_type)?)
            }
            E::Ceil { expr, field } | E::Floor { expr, field } => {
                if !matches!(
                    field,
                    CeilFloorKind::DateTimeField(DateTimeField::NoDateTime)
                ) {
                    return Err(unsupported(
                        "CEIL/FLOOR with a scale or unit (use round(x, digits))",
                    ));
                }
                let f = if matches!(e, E::Ceil { .. }) {
                    Func::Ceil
                } else {
                    Func::Floor
                };
                Expr::Call(f, vec![self.expr(expr)?])
            }
            E::Substring {
                expr,
                substring_from,
                substring_for,
                ..
            } => {
                let mut args = vec![self.expr(expr)?];
                args.push(match substring_from {
                    Some(f) => self.expr(f)?,
                    None => Expr::Lit(Lit::Int(1)),
                });
                if let Some(f) = substring_for {
                    args.push(self.expr(f)?);
                }
                Expr::Call(Func::Substring, args)
            }
            E::Trim {
                trim_where,
                trim_what,
                expr,
                trim_characters,
            } => {
                if trim_characters.is_some() {
                    return Err(unsupported("TRIM with a list of characters"));
                }
                let f = match trim_where {
                    None | Some(TrimWhereField::Both) => Func::Trim,
                    Some(TrimWhereField::Leading) => Func::LTrim,
                    Some(TrimWhereField::Trailing) => Func::RTrim,
                };
                let mut args = vec![self.expr(expr)?];
                if let Some(w) = trim_what {
                    args.push(self.expr(w)?);
                }
                Expr::Call(f, args)
            }
            E::Function(f) => self.function(f)?,
            E::Subquery(_) | E::Exists { .. } => return Err(unsupported("a subquery")),
            other => return Err(unsupported(format_args!("the expression {other}"))),
        })
    }

    fn function(&mut self, f: &sql::Function) -> Result<Expr, RuleError> {
        let name = match f.name.0.as_slice() {
            [ObjectNamePart::Identifier(id)] => id.value.as_str(),
            _ => return Err(RuleError::UnknownFunction(snippet(&f.name))),
        };
        let Some((func, min, max)) = Func::lookup(name) else {
            if AGGREGATES.iter().any(|a| a.eq_ignore_ascii_case(name)) {
                return Err(RuleError::Aggregate(name.to_lowercase()));
            }
            return Err(RuleError::UnknownFunction(snippet(name)));
        };
        let found = [
            (f.over.is_some(), "a window function (OVER)"),
            (f.filter.is_some(), "FILTER (WHERE ...)"),
            (!f.within_group.is_empty(), "WITHIN GROUP"),
            (f.null_treatment.is_some(), "IGNORE/RESPECT NULLS"),
            (f.uses_odbc_syntax, "an ODBC {fn ...} call"),
            (
                !matches!(f.parameters, FunctionArguments::None),
                "a function parameter list",
            ),
        ];
        if let Some((_, what)) = found.iter().find(|(present, _)| *present) {
            return Err(unsupported(what));
        }
        let args: &[FunctionArg] = match &f.args {
            FunctionArguments::None => &[],
            FunctionArguments::Subquery(_) => return Err(unsupported("a subquery")),
            FunctionArguments::List(list) => {
                if list.duplicate_treatment.is_some() {
                    return Err(unsupported("DISTINCT/ALL in function arguments"));
                }
                if !list.clauses.is_empty() {
                    return Err(unsupported("a clause in function arguments"));
                }
                &list.args
            }
        };
        if args.len() < min || args.len() > max {
            let expected = match (min, max) {
                (a, b) if a == b => a.to_string(),
                (a, usize::MAX) => format!("at least {a}"),
                (a, b) => format!("{a} to {b}"),
            };
            return Err(RuleError::Arity {
                function: name.to_lowercase(),
                expected,
                found: args.len(),
            });
        }
        let args = args
            .iter()
            .map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => self.expr(e),
                FunctionArg::Unnamed(_) => Err(unsupported("* as a function argument")),
                _ => Err(unsupported("a named function argument")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Expr::Call(func, args))
    }
}

fn subscript(index: &sql::Expr) -> Result<Seg, RuleError> {
    match index {
        sql::Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match subscript(expr)? {
            Seg::Index(i) if i > 0 => Ok(Seg::Index(-i)),
            _ => Err(unsupported(format_args!("the array index {index}"))),
        },
        sql::Expr::Value(v) => match &v.value {
            sql::Value::Number(n, _) => n
                .parse::<i64>()
                .map(Seg::Index)
                .map_err(|_| unsupported(format_args!("the array index {n}"))),
            other => match other.clone().into_string() {
                Some(s) => Ok(Seg::Key(s)),
                None => Err(unsupported(format_args!("the array index {other}"))),
            },
        },
        other => Err(unsupported(format_args!(
            "the array index {other} (only literal indexes)"
        ))),
    }
}

/// A bare double-quoted name where a value is expected (right of a comparison, in an IN
/// list, a LIKE pattern) is text, as EMQX's documentation writes it (`WHERE type = "door"`);
/// elsewhere (`SELECT "my-field"`, left of a comparison) it stays a field name. Read as a
/// field it would be a payload key `door`, missing from every message: the rule would be
/// accepted and never match.
fn quoted_text(e: &sql::Expr) -> Option<Expr> {
    match e {
        sql::Expr::Identifier(id) if id.quote_style == Some('"') => {
            Some(Expr::Lit(Lit::Str(id.value.clone())))
        }
        _ => None,
    }
}

fn literal(v: &sql::Value) -> Result<Lit, RuleError> {
    Ok(match v {
        sql::Value::Null => Lit::Null,
        sql::Value::Boolean(b) => Lit::Bool(*b),
        sql::Value::Number(n, _) => match n.parse::<i64>() {
            Ok(i) => Lit::Int(i),
            Err(_) => match n.parse::<f64>() {
                Ok(f) if f.is_finite() => Lit::Float(f),
                _ => return Err(RuleError::InvalidLiteral(snippet(n))),
            },
        },
        sql::Value::Placeholder(p) => return Err(unsupported(format_args!("the placeholder {p}"))),
        other => match other.clone().into_string() {
            Some(s) => Lit::Str(s),
            None => return Err(RuleError::InvalidLiteral(snippet(other))),
        },
    })
}

fn cast_type(t: &DataType) -> Result<CastTo, RuleError> {
    use DataType as D;
    Ok(match t {
        D::Int(_)
        | D::Integer(_)
        | D::BigInt(_)
        | D::SmallInt(_)
        | D::TinyInt(_)
        | D::Int2(_)
        | D::Int4(_)
        | D::Int8(_)
        | D::Int16
        | D::Int32
        | D::Int64
        | D::Signed
        | D::SignedInteger => CastTo::Int,
        D::Float(_)
        | D::Double(_)
        | D::DoublePrecision
        | D::Real
        | D::Float4
        | D::Float8
        | D::Float32
        | D::Float64
        | D::Decimal(_)
        | D::Numeric(_)
        | D::Dec(_) => CastTo::Float,
        D::String(_)
        | D::Text
        | D::Varchar(_)
        | D::Char(_)
        | D::Character(_)
        | D::CharVarying(_)
        | D::CharacterVarying(_)
        | D::Nvarchar(_) => CastTo::Str,
        D::Bool | D::Boolean => CastTo::Bool,
        D::Custom(name, modifiers) if modifiers.is_empty() => {
            match name.to_string().to_ascii_lowercase().as_str() {
                "int" | "integer" | "long" => CastTo::Int,
                "float" | "double" | "number" => CastTo::Float,
                "string" | "text" | "str" => CastTo::Str,
                "bool" | "boolean" => CastTo::Bool,
                _ => return Err(RuleError::UnsupportedType(snippet(t))),
            }
        }
        other => return Err(RuleError::UnsupportedType(snippet(other))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(sql: &str) -> Vec<String> {
        match parse(sql) {
            Ok(p) => p.filters.iter().map(|f| f.as_str().to_owned()).collect(),
            Err(e) => vec![format!("error: {e}")],
        }
    }

    #[test]
    fn single_and_double_quoted_filters() {
        assert_eq!(filters("SELECT * FROM 'sensors/#'"), ["sensors/#"]);
        assert_eq!(filters(r#"SELECT * FROM "sensors/+/t""#), ["sensors/+/t"]);
        assert_eq!(
            filters("SELECT * FROM 'a/#', \"b/+\" , 'c'"),
            ["a/#", "b/+", "c"]
        );
        assert_eq!(filters("select * from 'it''s'"), ["it's"]);
    }

    #[test]
    fn strings_elsewhere_stay_strings() {
        let p = parse("SELECT 'from' AS f FROM 'a' WHERE x = 'b'");
        assert!(p.is_ok(), "{p:?}");
        let p = parse("SELECT substring('abc' FROM 2) AS s FROM 'a'");
        assert!(matches!(p, Ok(ref p) if p.filters.len() == 1), "{p:?}");
    }

    #[test]
    fn unaliased_column_names() {
        let p = parse("SELECT temp, payload.a.b, temp * 2, topic(), \"my-field\" FROM 'a'");
        let names: Vec<String> = match p {
            Ok(p) => p
                .columns
                .iter()
                .map(|c| match c {
                    Column::All => "*".into(),
                    Column::Expr { name, .. } => name.clone(),
                })
                .collect(),
            Err(e) => vec![e.to_string()],
        };
        assert_eq!(names, ["temp", "b", "temp * 2", "topic()", "my-field"]);
    }

    #[test]
    fn payload_is_not_parsed_for_metadata_only_rules() {
        assert!(matches!(parse("SELECT topic() AS t FROM 'a'"), Ok(p) if !p.needs_body));
        assert!(matches!(parse("SELECT topic FROM 'a'"), Ok(p) if p.needs_body));
        assert!(matches!(parse("SELECT * FROM 'a'"), Ok(p) if p.needs_body));
    }

    #[test]
    fn snippet_cuts_long_text_on_a_char_boundary() {
        let s = snippet("é".repeat(100));
        assert_eq!(s.chars().count(), 63);
        assert!(s.ends_with("..."));
    }
}
