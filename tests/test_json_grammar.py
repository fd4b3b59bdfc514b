from programs.json_grammar import schema_from_response_format, schema_to_gbnf, unit_interval_bounds


def test_unit_interval_numbers_get_a_fixed_decimal_rule():
    assert unit_interval_bounds({"type": "number", "minimum": 0, "maximum": 1}) == (0.0, 1.0)
    assert unit_interval_bounds({"type": "number", "minimum": -1, "maximum": 1}) == (-1.0, 1.0)
    assert unit_interval_bounds({"type": "number", "minimum": 0, "maximum": 5}) is None
    grammar = schema_to_gbnf({"type": "object", "properties": {
        "label": {"enum": ["negative", "positive"], "type": "string"},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1}}, "required": ["label", "confidence"]})
    assert '"1" ("." "0"' in grammar
    assert "decimal-part" not in grammar.split("confidence")[0]


def test_signed_unit_interval_allows_a_minus_sign():
    grammar = schema_to_gbnf({"type": "number", "minimum": -1, "maximum": 1})
    assert grammar.startswith('root ::= "-"?')


def test_response_format_forms():
    schema = {"type": "object"}
    assert schema_from_response_format({"type": "json_schema", "json_schema": {"schema": schema}}) == schema
    assert schema_from_response_format({"type": "json_schema", "schema": schema, "name": "a"}) == schema
    assert schema_from_response_format({"type": "json_object", "schema": schema}) == schema
    assert schema_from_response_format({"type": "json_object"}) == {}
    assert schema_from_response_format(None) is None
    assert schema_from_response_format({"type": "text"}) is None
