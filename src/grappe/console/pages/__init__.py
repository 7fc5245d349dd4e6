"""The console's pages, one module each; ``grappe.console.PAGE_MODULES`` names them."""
