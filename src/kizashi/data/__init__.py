"""Raw input: schema, trading calendar, the daily panel (``panel``: read, validate,
adjust), intraday bars (``bars``: read, validate, resample), synthetic data
(``synthetic``: daily, intraday), the validation report shared by all of them
(``report``) and the entry point that loads a configuration's inputs (``inputs``)."""
