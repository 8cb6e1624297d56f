"""Analytics (issue 5): RFM and lifecycle, cohorts and value, current interest, ready reports, BI export.

The data flow: ``sql`` builds the relations every report reads (orders, order lines,
activity — each resolved to canonical profiles) as sqlglot expressions for both
engines; ``rfm``, ``cohorts``, ``interest`` and ``reports`` aggregate them in the engine
and shape small results in Python; what is per profile is stored as scores
(``opencdp.profiles.scores``), so segments can use it (``computed.rfm_cell = "at_risk"``).
``views`` and ``export`` give BI tools the raw data; ``charts`` draws a report as SVG.
Bad parameters raise ``ReportError`` (a 422 naming the parameter).
"""
