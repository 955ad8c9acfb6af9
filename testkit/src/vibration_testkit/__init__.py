"""Helpers the tests and the tools share: brokers, emulators, tiny models, reference formulas.

Fixtures live in the tests' conftest files; what they and the tools call lives
here, so nothing imports a test module or edits ``sys.path``. A development
package only: no image installs it, and no deployable may import it (an
import-linter contract).
"""
