//! A recursive-descent parser that type-checks as it goes and writes the expression's
//! nodes straight into the arena the evaluator walks. Field names get local numbers here;
//! [`Expression::compile`](super::Expression::compile) interns them only when the whole
//! expression compiled, so a rejected expression leaves the field table untouched.
//!
//! Precedence, lowest first: `or`, `and`, `not`, comparisons (which do not chain),
//! `+ -`, `* / %`, unary `-`, then literals, fields, calls and parentheses.

use std::borrow::Cow;

use super::lexer::{Lexer, Token, TokenKind};
use super::{BinaryOp, Function, MAX_DEPTH, Node, UnaryOp, ValueType};
use crate::error::ExprError;

/// What the parser produced: the arena and its root, the arguments of n-ary calls and the
/// distinct field names in order of first use, which `Node::Field`, `Node::Delta` and
/// `Node::Rate` refer to by index until they are interned.
pub(super) struct Parsed {
    pub(super) root: u32,
    pub(super) nodes: Vec<Node>,
    pub(super) arguments: Vec<u32>,
    pub(super) names: Vec<Box<str>>,
    pub(super) value_type: ValueType,
}

/// A parsed sub-expression: its node, static type and source span.
#[derive(Debug, Clone, Copy)]
struct Operand {
    node: u32,
    value_type: ValueType,
    start: usize,
    end: usize,
    /// Height of its tree, to bound the evaluator's recursion.
    depth: u32,
    /// Whether it is a bare `true` or `false`, which `==` and `!=` compare with a number
    /// as 1 and 0.
    is_boolean_literal: bool,
}

const FUNCTIONS: &str = "abs, min, max, delta, rate";

pub(super) fn parse(source: &str) -> Result<Parsed, ExprError> {
    let mut parser = Parser {
        source,
        lexer: Lexer::new(source),
        current: Token {
            kind: TokenKind::End,
            start: 0,
            end: 0,
        },
        nodes: Vec::new(),
        arguments: Vec::new(),
        names: Vec::new(),
        nesting: 0,
    };
    parser.advance()?;
    let root = parser.or()?;
    if parser.current.kind != TokenKind::End {
        return Err(parser.unexpected("an operator or the end of the expression"));
    }
    Ok(Parsed {
        root: root.node,
        nodes: parser.nodes,
        arguments: parser.arguments,
        names: parser.names,
        value_type: root.value_type,
    })
}

struct Parser<'a> {
    source: &'a str,
    lexer: Lexer<'a>,
    current: Token,
    nodes: Vec<Node>,
    arguments: Vec<u32>,
    names: Vec<Box<str>>,
    /// Open parentheses, calls and prefix operators around the current position.
    nesting: u32,
}

impl Parser<'_> {
    fn advance(&mut self) -> Result<Token, ExprError> {
        let token = self.current;
        self.current = self.lexer.next_token()?;
        Ok(token)
    }

    fn text(&self, start: usize, end: usize) -> &str {
        &self.source[start..end]
    }

    /// `expected ..., found <the current token>`.
    fn unexpected(&self, expected: impl Into<Cow<'static, str>>) -> ExprError {
        let found = match self.current.kind {
            TokenKind::End => None,
            _ => Some(format!(
                "\"{}\"",
                self.text(self.current.start, self.current.end)
            )),
        };
        ExprError::new(self.source, self.current.start, expected, found)
    }

    /// A type error about `operand`.
    fn wrong_type(&self, operand: &Operand, expected: String) -> ExprError {
        ExprError::new(
            self.source,
            operand.start,
            expected,
            Some(operand.value_type.described().to_owned()),
        )
    }

    fn expect_type(
        &self,
        operand: &Operand,
        value_type: ValueType,
        operator: &str,
    ) -> Result<(), ExprError> {
        if operand.value_type == value_type {
            Ok(())
        } else {
            Err(self.wrong_type(
                operand,
                format!(
                    "{} as the operand of \"{operator}\"",
                    value_type.described()
                ),
            ))
        }
    }

    /// Runs `parse` one nesting level deeper, refusing text nested beyond [`MAX_DEPTH`]
    /// before the parser's own recursion could exhaust the stack.
    fn nested(
        &mut self,
        parse: impl FnOnce(&mut Self) -> Result<Operand, ExprError>,
    ) -> Result<Operand, ExprError> {
        if self.nesting >= MAX_DEPTH {
            return Err(self.too_deep(self.current.start));
        }
        self.nesting += 1;
        let result = parse(self);
        self.nesting -= 1;
        result
    }

    fn too_deep(&self, position: usize) -> ExprError {
        ExprError::new(
            self.source,
            position,
            format!("an expression nested at most {MAX_DEPTH} levels deep"),
            Some("a deeper one".to_owned()),
        )
    }

    fn push(
        &mut self,
        node: Node,
        value_type: ValueType,
        start: usize,
        end: usize,
        children: &[Operand],
    ) -> Result<Operand, ExprError> {
        let depth = 1 + children.iter().map(|child| child.depth).max().unwrap_or(0);
        if depth > MAX_DEPTH {
            return Err(self.too_deep(start));
        }
        self.nodes.push(node);
        Ok(Operand {
            node: (self.nodes.len() - 1) as u32,
            value_type,
            start,
            end,
            depth,
            is_boolean_literal: false,
        })
    }

    fn binary(
        &mut self,
        op: BinaryOp,
        left: Operand,
        right: Operand,
        value_type: ValueType,
    ) -> Result<Operand, ExprError> {
        let node = Node::Binary {
            op,
            left: left.node,
            right: right.node,
        };
        self.push(node, value_type, left.start, right.end, &[left, right])
    }

    fn or(&mut self) -> Result<Operand, ExprError> {
        let mut left = self.and()?;
        while self.current.kind == TokenKind::Or {
            let operator = self.advance()?;
            let right = self.and()?;
            let text = self.text(operator.start, operator.end);
            self.expect_type(&left, ValueType::Boolean, text)?;
            self.expect_type(&right, ValueType::Boolean, text)?;
            left = self.binary(BinaryOp::Or, left, right, ValueType::Boolean)?;
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Operand, ExprError> {
        let mut left = self.not()?;
        while self.current.kind == TokenKind::And {
            let operator = self.advance()?;
            let right = self.not()?;
            let text = self.text(operator.start, operator.end);
            self.expect_type(&left, ValueType::Boolean, text)?;
            self.expect_type(&right, ValueType::Boolean, text)?;
            left = self.binary(BinaryOp::And, left, right, ValueType::Boolean)?;
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Operand, ExprError> {
        if self.current.kind != TokenKind::Not {
            return self.comparison();
        }
        let operator = self.advance()?;
        let operand = self.nested(Self::not)?;
        self.expect_type(
            &operand,
            ValueType::Boolean,
            self.text(operator.start, operator.end),
        )?;
        let node = Node::Unary {
            op: UnaryOp::Not,
            operand: operand.node,
        };
        self.push(
            node,
            ValueType::Boolean,
            operator.start,
            operand.end,
            &[operand],
        )
    }

    fn comparison(&mut self) -> Result<Operand, ExprError> {
        let left = self.additive()?;
        let Some(op) = comparison_op(self.current.kind) else {
            return Ok(left);
        };
        let operator = self.advance()?;
        let right = self.additive()?;
        let text = self.text(operator.start, operator.end);
        if matches!(op, BinaryOp::Equal | BinaryOp::NotEqual) {
            // Same types compare; a number compares with a bare `true`/`false` as 1/0
            // (booleans arrive in telemetry as 1.0 and 0.0).
            let mismatch = match (left.value_type, right.value_type) {
                (ValueType::Number, ValueType::Boolean) if !right.is_boolean_literal => Some(right),
                (ValueType::Boolean, ValueType::Number) if !left.is_boolean_literal => Some(left),
                _ => None,
            };
            if let Some(operand) = mismatch {
                return Err(self.wrong_type(
                    &operand,
                    format!("a number, like the other operand of \"{text}\""),
                ));
            }
        } else {
            self.expect_type(&left, ValueType::Number, text)?;
            self.expect_type(&right, ValueType::Number, text)?;
        }
        let result = self.binary(op, left, right, ValueType::Boolean)?;
        if comparison_op(self.current.kind).is_some() {
            return Err(self.unexpected("\"and\" or \"or\" between two comparisons"));
        }
        Ok(result)
    }

    fn additive(&mut self) -> Result<Operand, ExprError> {
        let mut left = self.multiplicative()?;
        loop {
            let op = match self.current.kind {
                TokenKind::Plus => BinaryOp::Add,
                TokenKind::Minus => BinaryOp::Subtract,
                _ => return Ok(left),
            };
            left = self.arithmetic(op, left, Self::multiplicative)?;
        }
    }

    fn multiplicative(&mut self) -> Result<Operand, ExprError> {
        let mut left = self.unary()?;
        loop {
            let op = match self.current.kind {
                TokenKind::Star => BinaryOp::Multiply,
                TokenKind::Slash => BinaryOp::Divide,
                TokenKind::Percent => BinaryOp::Remainder,
                _ => return Ok(left),
            };
            left = self.arithmetic(op, left, Self::unary)?;
        }
    }

    /// The operator at the current token, its right operand and the type checks.
    fn arithmetic(
        &mut self,
        op: BinaryOp,
        left: Operand,
        operand: fn(&mut Self) -> Result<Operand, ExprError>,
    ) -> Result<Operand, ExprError> {
        let operator = self.advance()?;
        let right = operand(self)?;
        let text = self.text(operator.start, operator.end);
        self.expect_type(&left, ValueType::Number, text)?;
        self.expect_type(&right, ValueType::Number, text)?;
        self.binary(op, left, right, ValueType::Number)
    }

    fn unary(&mut self) -> Result<Operand, ExprError> {
        if self.current.kind != TokenKind::Minus {
            return self.primary();
        }
        let operator = self.advance()?;
        let operand = self.nested(Self::unary)?;
        self.expect_type(&operand, ValueType::Number, "-")?;
        // A negative literal is a constant, not a negation.
        if let Node::Constant(value) = self.nodes[operand.node as usize] {
            if operand.node as usize == self.nodes.len() - 1 {
                self.nodes[operand.node as usize] = Node::Constant(-value);
                return Ok(Operand {
                    start: operator.start,
                    ..operand
                });
            }
        }
        let node = Node::Unary {
            op: UnaryOp::Negate,
            operand: operand.node,
        };
        self.push(
            node,
            ValueType::Number,
            operator.start,
            operand.end,
            &[operand],
        )
    }

    fn primary(&mut self) -> Result<Operand, ExprError> {
        let token = self.current;
        match token.kind {
            TokenKind::Number(value) => {
                self.advance()?;
                self.push(
                    Node::Constant(value),
                    ValueType::Number,
                    token.start,
                    token.end,
                    &[],
                )
            }
            TokenKind::True | TokenKind::False => {
                self.advance()?;
                let value = if token.kind == TokenKind::True {
                    1.0
                } else {
                    0.0
                };
                let operand = self.push(
                    Node::Constant(value),
                    ValueType::Boolean,
                    token.start,
                    token.end,
                    &[],
                )?;
                Ok(Operand {
                    is_boolean_literal: true,
                    ..operand
                })
            }
            TokenKind::Identifier => {
                self.advance()?;
                if self.current.kind == TokenKind::LeftParenthesis {
                    return self.call(token);
                }
                self.field(token.start, token.end, token.start, token.end)
            }
            TokenKind::QuotedIdentifier => {
                self.advance()?;
                self.field(token.start + 1, token.end - 1, token.start, token.end)
            }
            TokenKind::LeftParenthesis => {
                self.advance()?;
                let inner = self.nested(Self::or)?;
                if self.current.kind != TokenKind::RightParenthesis {
                    return Err(self.unexpected("\")\""));
                }
                let closing = self.advance()?;
                Ok(Operand {
                    start: token.start,
                    end: closing.end,
                    ..inner
                })
            }
            _ => Err(self.unexpected("an operand")),
        }
    }

    /// A field whose name is `source[name_start..name_end]`.
    fn field(
        &mut self,
        name_start: usize,
        name_end: usize,
        start: usize,
        end: usize,
    ) -> Result<Operand, ExprError> {
        let index = self.name_index(name_start, name_end);
        self.push(Node::Field(index), ValueType::Number, start, end, &[])
    }

    fn name_index(&mut self, start: usize, end: usize) -> u32 {
        let name = &self.source[start..end];
        let index = match self.names.iter().position(|known| &**known == name) {
            Some(index) => index,
            None => {
                self.names.push(name.into());
                self.names.len() - 1
            }
        };
        index as u32
    }

    /// A call of the function `name`; the current token is its `(`.
    fn call(&mut self, name: Token) -> Result<Operand, ExprError> {
        let text = self.text(name.start, name.end);
        let function = match text {
            "abs" => Function::Abs,
            "min" => Function::Min,
            "max" => Function::Max,
            "delta" => Function::Delta,
            "rate" => Function::Rate,
            _ => {
                return Err(ExprError::new(
                    self.source,
                    name.start,
                    format!("a known function ({FUNCTIONS})"),
                    Some(format!("\"{text}\"")),
                ));
            }
        };
        self.advance()?;
        let mut arguments = Vec::new();
        if self.current.kind != TokenKind::RightParenthesis {
            loop {
                arguments.push(self.nested(Self::or)?);
                match self.current.kind {
                    TokenKind::Comma => {
                        self.advance()?;
                    }
                    TokenKind::RightParenthesis => break,
                    _ => return Err(self.unexpected("\",\" or \")\"")),
                }
            }
        }
        let closing = self.advance()?;
        let name_text = function.name();
        let arity_error = |expected: &str| {
            ExprError::new(
                self.source,
                name.start,
                format!("{expected} for {name_text}"),
                Some(arguments.len().to_string()),
            )
        };
        match function {
            Function::Abs | Function::Delta | Function::Rate if arguments.len() != 1 => {
                return Err(arity_error("1 argument"));
            }
            Function::Min | Function::Max if arguments.is_empty() => {
                return Err(arity_error("at least 1 argument"));
            }
            _ => {}
        }
        for argument in &arguments {
            if argument.value_type != ValueType::Number {
                return Err(
                    self.wrong_type(argument, format!("a number as the argument of {name_text}"))
                );
            }
        }
        match function {
            Function::Abs => {
                let node = Node::Unary {
                    op: UnaryOp::Abs,
                    operand: arguments[0].node,
                };
                self.push(node, ValueType::Number, name.start, closing.end, &arguments)
            }
            Function::Min | Function::Max => {
                let first = self.arguments.len() as u32;
                self.arguments
                    .extend(arguments.iter().map(|argument| argument.node));
                let node = Node::Extremum {
                    is_max: function == Function::Max,
                    first,
                    count: arguments.len() as u32,
                };
                self.push(node, ValueType::Number, name.start, closing.end, &arguments)
            }
            Function::Delta | Function::Rate => {
                let argument = arguments[0];
                let Node::Field(field) = self.nodes[argument.node as usize] else {
                    return Err(ExprError::new(
                        self.source,
                        argument.start,
                        format!("a field name as the argument of {name_text}"),
                        Some(format!("\"{}\"", self.text(argument.start, argument.end))),
                    ));
                };
                // The field's own node is not needed: the call names the field itself.
                if argument.node as usize == self.nodes.len() - 1 {
                    self.nodes.pop();
                }
                let node = if function == Function::Delta {
                    Node::Delta(field)
                } else {
                    Node::Rate(field)
                };
                self.push(node, ValueType::Number, name.start, closing.end, &[])
            }
        }
    }
}

fn comparison_op(kind: TokenKind) -> Option<BinaryOp> {
    Some(match kind {
        TokenKind::Less => BinaryOp::Less,
        TokenKind::LessEqual => BinaryOp::LessEqual,
        TokenKind::Greater => BinaryOp::Greater,
        TokenKind::GreaterEqual => BinaryOp::GreaterEqual,
        TokenKind::Equal => BinaryOp::Equal,
        TokenKind::NotEqual => BinaryOp::NotEqual,
        _ => return None,
    })
}
