package controllers

// StartupQuiet is startupQuiet, for the integration specs (package controllers_test).
const StartupQuiet = startupQuiet
