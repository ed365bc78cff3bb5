"""The Go text/template renderer for the tests: it lives in the library now (rollbook.sandbox.gotemplate),
because the sandbox's simulated notification controller renders Argo's templates with it too."""

from rollbook.sandbox.gotemplate import (
    FUNCS,
    MISSING,
    RFC3339,
    GoTemplateError,
    GoTime,
    parse,
    render,
    time_vars,
    to_json,
)

__all__ = ["FUNCS", "MISSING", "RFC3339", "GoTemplateError", "GoTime", "parse", "render", "time_vars", "to_json"]
