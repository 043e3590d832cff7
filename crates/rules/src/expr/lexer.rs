//! Splits expression text into tokens, one at a time, on demand of the parser (so errors
//! come out left to right). Malformed tokens (`1.2.3`, a lone `=`, an unclosed backtick)
//! are errors here; a character that starts no token becomes [`TokenKind::Unknown`] so the
//! parser can say what it expected in its place.

use crate::error::ExprError;

/// What a token is. Names and numbers are read from the source by the token's span.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum TokenKind {
    /// A finite number literal.
    Number(f64),
    /// A bare field or function name, `[A-Za-z_][A-Za-z0-9_.]*`, not a keyword.
    Identifier,
    /// A field name between backticks; the name is the span without them.
    QuotedIdentifier,
    True,
    False,
    /// `and` or `&&`.
    And,
    /// `or` or `||`.
    Or,
    /// `not` or `!`.
    Not,
    Less,
    LessEqual,
    Greater,
    GreaterEqual,
    Equal,
    NotEqual,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    LeftParenthesis,
    RightParenthesis,
    Comma,
    /// A character that starts no token.
    Unknown,
    /// The end of the text.
    End,
}

/// A token and where it is: `source[start..end]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Token {
    pub(super) kind: TokenKind,
    pub(super) start: usize,
    pub(super) end: usize,
}

/// The tokenizer's position in the text.
pub(super) struct Lexer<'a> {
    source: &'a str,
    position: usize,
}

impl<'a> Lexer<'a> {
    pub(super) fn new(source: &'a str) -> Lexer<'a> {
        Lexer {
            source,
            position: 0,
        }
    }

    /// Reads the next token, skipping white space.
    pub(super) fn next_token(&mut self) -> Result<Token, ExprError> {
        let rest = &self.source[self.position..];
        let trimmed = rest.trim_start();
        let start = self.position + (rest.len() - trimmed.len());
        let bytes = trimmed.as_bytes();
        let Some(&first) = bytes.first() else {
            self.position = self.source.len();
            return Ok(Token {
                kind: TokenKind::End,
                start: self.source.len(),
                end: self.source.len(),
            });
        };
        let second = bytes.get(1).copied();
        let (kind, length) = match first {
            b'0'..=b'9' => return self.number(start),
            b'.' if second.is_some_and(|byte| byte.is_ascii_digit()) => {
                return self.number(start);
            }
            b'A'..=b'Z' | b'a'..=b'z' | b'_' => return Ok(self.identifier(start)),
            b'`' => return self.quoted_identifier(start),
            b'<' if second == Some(b'=') => (TokenKind::LessEqual, 2),
            b'<' => (TokenKind::Less, 1),
            b'>' if second == Some(b'=') => (TokenKind::GreaterEqual, 2),
            b'>' => (TokenKind::Greater, 1),
            b'=' if second == Some(b'=') => (TokenKind::Equal, 2),
            b'=' => return Err(self.lone(start, "\"==\" to compare", "=")),
            b'!' if second == Some(b'=') => (TokenKind::NotEqual, 2),
            b'!' => (TokenKind::Not, 1),
            b'&' if second == Some(b'&') => (TokenKind::And, 2),
            b'&' => return Err(self.lone(start, "\"&&\"", "&")),
            b'|' if second == Some(b'|') => (TokenKind::Or, 2),
            b'|' => return Err(self.lone(start, "\"||\"", "|")),
            b'+' => (TokenKind::Plus, 1),
            b'-' => (TokenKind::Minus, 1),
            b'*' => (TokenKind::Star, 1),
            b'/' => (TokenKind::Slash, 1),
            b'%' => (TokenKind::Percent, 1),
            b'(' => (TokenKind::LeftParenthesis, 1),
            b')' => (TokenKind::RightParenthesis, 1),
            b',' => (TokenKind::Comma, 1),
            _ => {
                let length = trimmed.chars().next().map_or(1, char::len_utf8);
                (TokenKind::Unknown, length)
            }
        };
        Ok(self.token(kind, start, start + length))
    }

    fn token(&mut self, kind: TokenKind, start: usize, end: usize) -> Token {
        self.position = end;
        Token { kind, start, end }
    }

    fn lone(&self, start: usize, expected: &'static str, found: &str) -> ExprError {
        ExprError::new(self.source, start, expected, Some(format!("\"{found}\"")))
    }

    /// `digits [. digits] [e [+-] digits]` or `. digits [e ...]`, parsed by the standard
    /// library; a name character or a dot right after it makes the whole run an error.
    fn number(&mut self, start: usize) -> Result<Token, ExprError> {
        let bytes = self.source.as_bytes();
        let digits_from = |mut index: usize| {
            while bytes.get(index).is_some_and(u8::is_ascii_digit) {
                index += 1;
            }
            index
        };
        let mut end = digits_from(start);
        if bytes.get(end) == Some(&b'.') {
            end = digits_from(end + 1);
        }
        if matches!(bytes.get(end), Some(b'e' | b'E')) {
            let mut exponent = end + 1;
            if matches!(bytes.get(exponent), Some(b'+' | b'-')) {
                exponent += 1;
            }
            let exponent_end = digits_from(exponent);
            // Without digits the `e` is not an exponent; the check below reports it.
            if exponent_end > exponent {
                end = exponent_end;
            }
        }
        if bytes
            .get(end)
            .is_some_and(|&byte| is_name_byte(byte) || byte == b'.')
        {
            let mut run_end = end;
            while bytes
                .get(run_end)
                .is_some_and(|&byte| is_name_byte(byte) || matches!(byte, b'.' | b'+' | b'-'))
            {
                // A sign continues the run only right after an exponent letter (`1e+x`).
                if matches!(bytes[run_end], b'+' | b'-')
                    && !matches!(bytes[run_end - 1], b'e' | b'E')
                {
                    break;
                }
                run_end += 1;
            }
            return Err(ExprError::new(
                self.source,
                start,
                "a number",
                Some(format!("\"{}\"", &self.source[start..run_end])),
            ));
        }
        let text = &self.source[start..end];
        match text.parse::<f64>() {
            Ok(value) if value.is_finite() => Ok(self.token(TokenKind::Number(value), start, end)),
            _ => Err(ExprError::new(
                self.source,
                start,
                "a finite number",
                Some(format!("\"{text}\"")),
            )),
        }
    }

    fn identifier(&mut self, start: usize) -> Token {
        let bytes = self.source.as_bytes();
        let mut end = start + 1;
        while bytes
            .get(end)
            .is_some_and(|&byte| is_name_byte(byte) || byte == b'.')
        {
            end += 1;
        }
        let kind = match &self.source[start..end] {
            "and" => TokenKind::And,
            "or" => TokenKind::Or,
            "not" => TokenKind::Not,
            "true" => TokenKind::True,
            "false" => TokenKind::False,
            _ => TokenKind::Identifier,
        };
        self.token(kind, start, end)
    }

    fn quoted_identifier(&mut self, start: usize) -> Result<Token, ExprError> {
        let Some(length) = self.source[start + 1..].find('`') else {
            return Err(ExprError::new(
                self.source,
                self.source.len(),
                "a closing \"`\"",
                None,
            ));
        };
        if length == 0 {
            return Err(ExprError::new(
                self.source,
                start,
                "a field name between the backticks",
                Some("\"``\"".to_owned()),
            ));
        }
        Ok(self.token(TokenKind::QuotedIdentifier, start, start + length + 2))
    }
}

fn is_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}
