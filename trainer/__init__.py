"""`cxrviewer-train`: retrains the models (Qt-free; never imports cxrviewer.gui)."""
